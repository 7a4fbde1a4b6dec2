"""Prefect flows: drain the callout inbox, reconcile the cache against Zuora."""

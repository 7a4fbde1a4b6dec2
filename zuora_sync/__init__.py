"""zuora-sync: keep a local cache of Zuora Billing subscriptions exactly in sync with Zuora."""

__version__ = "0.1.0"

"""The Zuora API client, the query APIs, tenant setup, and the simulated tenant."""

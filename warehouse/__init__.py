"""The warehouse: schema, migrations, the callout inbox queue and the subscription cache."""

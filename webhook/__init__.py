"""The callout webhook: Zuora callout -> callout_inbox."""

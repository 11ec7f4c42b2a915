"""Webhooks: a workflow's URL that starts runs."""

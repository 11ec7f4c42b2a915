"""Workspace secrets: names and dates out, values in only."""

"""Schedules: a workflow's cron schedule, its upcoming and recent fires, and its update."""

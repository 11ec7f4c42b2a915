"""The run event log and its LISTEN/NOTIFY fan-out to subscribers."""

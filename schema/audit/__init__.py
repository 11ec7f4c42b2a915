"""The audit trail of a workspace (owners only)."""

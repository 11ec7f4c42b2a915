"""Business operations, one module per domain noun; the caller owns the transaction."""

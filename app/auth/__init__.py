"""Authentication (API tokens) and authorization (principals and roles)."""

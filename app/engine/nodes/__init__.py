"""The node catalogue: one module per node type, registered at import (see base.py)."""

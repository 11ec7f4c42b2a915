"""nodeTest: run one node of a workflow once from the editor."""

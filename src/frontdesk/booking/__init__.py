"""booking."""

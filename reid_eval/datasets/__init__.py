"""datasets stage."""

"""Dataset reading and validation (I3A Task 2 layout)."""

"""Helpers shared by the benchmark scripts in benchmarks/ (not part of the installed package)."""

"""Load benchmarks that print numbers (not tests). Run each with `python -m bench.<name>`."""

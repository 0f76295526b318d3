"""Tasks: the contract between the loop and a benchmark, and the built-in tasks."""

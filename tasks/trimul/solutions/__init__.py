"""Solution modules for TriMul: each file defines custom_kernel(inputs); the harness loads them by path."""

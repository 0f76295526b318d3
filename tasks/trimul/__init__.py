"""TriMul: the AlphaFold-3 outgoing Triangle Multiplicative Update as a GPU-kernel task (see README.md)."""

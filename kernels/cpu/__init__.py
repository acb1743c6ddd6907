"""Numba CPU kernels (decorated at module level, compiled lazily on first call)."""

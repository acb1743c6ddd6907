"""Compiled kernels of fastcpa, shipped as ``fastcpa.kernels``.

``_geometry`` holds scalar geometric routines written once as plain Python;
each target compiles them (``cpu`` with ``numba.njit``). Nothing is compiled at
import time.
"""

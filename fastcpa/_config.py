"""Environment-driven settings read once, at import time.

``FASTCPA_NUMBA_CACHE=0`` turns off Numba's on-disk kernel cache (useful under
multiprocessing or on read-only installs; see also ``NUMBA_CACHE_DIR``).
"""

import os

#: Whether Numba kernels are cached on disk (``FASTCPA_NUMBA_CACHE``, default on).
NUMBA_CACHE = os.environ.get("FASTCPA_NUMBA_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")

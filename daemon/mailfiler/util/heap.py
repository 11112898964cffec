"""Fixed malloc thresholds for the daemon (glibc), so that the memory a
backfill of large mail holds does not depend on how many it has read.

glibc adapts its mmap threshold: once a large block (a 30 MB attachment) is
freed, blocks up to that size are served from the heap, where, freed, they
stay.  With parses in threads (tracking/offloop.py) each thread's heap kept
one such attachment: 16 messages of 40 MB peaked ~35 MiB higher than one
(tests/e2e/test_backfill_memory.py).  Fixed thresholds end that: a block of
16 MB or more is always mapped and given back when freed.  The trim threshold
is fixed too, high, because a fixed mmap threshold also stops glibc from
raising it: at its 128 KB default, the heap was given back and faulted in
again all through a backfill (the event loop's CPU up by half).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("mailfiler.service")

#: mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks this large are mapped (and unmapped when freed)
MMAP_THRESHOLD = 16 * 1024 * 1024
#: free memory at the heap's top beyond this is given back
TRIM_THRESHOLD = 32 * 1024 * 1024


def fix_malloc_thresholds() -> bool:
    """Set the thresholds; False where the C library has no mallopt (not glibc)."""
    try:
        # the process's own symbols, libc's among them: no search for the library
        # (find_library runs ldconfig in a child process)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: malloc thresholds left as they are")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))

"""Hints to the operating system about memory this process no longer needs, through the C library already loaded
(no library search at import). Both are hints: values are never lost, and where the call is missing (not Linux, not
glibc, an older kernel) they do nothing.

- `page_out(tensor)`: reclaim the pages holding a tensor now (`madvise(MADV_PAGEOUT)`, Linux 5.4+). For a tensor read
  through mmap, the file's pages leave resident memory and are read again if touched (`audioclip.load` copies each
  weight and pages its source out, so the file is never resident whole beside the model).
- `return_free_heap()`: give glibc's free heap pages back (`malloc_trim(0)`); a window-by-window classification calls
  it after each batch, or its resident memory wanders with the holes the forward passes leave (`make bench-long`).
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any

MADV_PAGEOUT = 21


def _libc_function(name: str, argtypes: list, restype: Any = ctypes.c_int) -> Any:
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):  # no such call in this C library
        return None
    function.argtypes, function.restype = argtypes, restype
    return function


_MADVISE = _libc_function("madvise", [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
_MALLOC_TRIM = _libc_function("malloc_trim", [ctypes.c_size_t])


def page_out(tensor: Any) -> None:
    """Ask the kernel to reclaim the pages holding `tensor` (a CPU torch tensor); its values stay readable."""
    if _MADVISE is None or tensor.device.type != "cpu" or not tensor.numel():
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr() // page * page
    end = tensor.data_ptr() + tensor.numel() * tensor.element_size()
    _MADVISE(start, -(-(end - start) // page) * page, MADV_PAGEOUT)


def return_free_heap() -> None:
    """Give the heap's free pages back to the system (glibc); a no-op elsewhere."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)

"""Memory of the running process: current and peak resident set size, and the peak
device memory used in training. Shared by the separation Brain (per-epoch training
statistics) and the efficiency benchmark (``s4m-bench``)."""

import contextlib
import resource
import sys
from typing import Optional

import torch


def proc_field_bytes(field: str, path: str = "/proc/self/status") -> Optional[int]:
    """A ``kB`` field of a /proc file (``/proc/self/status`` by default, or e.g.
    ``/proc/meminfo``) in bytes, or None where /proc or the field is absent.

    Example
    -------
    >>> proc_field_bytes("NoSuchField") is None
    True
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(path, encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process: ``VmHWM`` where /proc has it (the
    high-water mark that :func:`reset_peak_rss` resets), else ``ru_maxrss``. On Linux
    ``ru_maxrss`` also carries the RSS of the parent at fork time across ``exec``, so
    it cannot measure a child's own peak below its parent's size.

    Example
    -------
    >>> peak_rss_bytes() >= (current_rss_bytes() or 0) > 0
    True
    """
    peak = proc_field_bytes("VmHWM")
    if peak is not None:
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def current_rss_bytes() -> Optional[int]:
    """Resident set size now (``VmRSS``), or None where /proc is unavailable."""
    return proc_field_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the peak-RSS high-water mark (``VmHWM``) to the current RSS, which Linux
    allows by writing 5 to /proc/self/clear_refs; False where it cannot."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    return False


def peak_memory_gb(device: "str | torch.device") -> float:
    """Peak memory in GB (1e9 bytes) for work on ``device``: the peak memory
    allocated by PyTorch on a CUDA device, else the process's peak resident set size.

    Example
    -------
    >>> peak_memory_gb("cpu") > 0
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return peak_rss_bytes() / 1e9


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to
    the operating system (``mallopt``: mmap threshold 1 GiB, trim threshold 2 GiB).

    By default every allocation above 32 MiB (one activation of a 60 s input is
    123 MB) is a fresh ``mmap`` whose pages are faulted in and zeroed on each use,
    which makes long inputs look super-linear. Process-wide; False where glibc is
    not available. The environment variables ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_`` (or jemalloc / tcmalloc) do the same for any program.
    ``s4m-separate`` calls it at start.
    """
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))
    return False


def set_torch_threads(count: int) -> None:
    """Change torch's intra-op thread count only when it differs: with torch 2.11's
    MKL build, ``torch.set_num_threads(n >= 2)`` after LAPACK has run can make later
    linear algebra in the same process hang (seen with ``torch.linalg.solve``)."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)

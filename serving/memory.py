"""The server's memory ceiling: its resident memory, the container's limit, and a cheap "over it?" check.

New calls and streams are refused (RESOURCE_EXHAUSTED, reason ``memory``) while the process's
resident memory is above the ceiling, so that a flood of sessions ends in refusals rather than the
kernel's OOM killer. The ceiling defaults to a share of the container's limit (cgroup v2
``memory.max``, v1 ``memory.limit_in_bytes``), else of the machine's memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable
from pathlib import Path

from breakout_dqn.serving.config import MEMORY_LIMIT_SHARE

CGROUP_ROOT = Path("/sys/fs/cgroup")
CHECK_EVERY_S = 0.05  # resident memory is read at most this often (one /proc read, ~10 us)
MIB = 1 << 20


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_v2_dir(root: Path) -> Path:
    """The process's own cgroup v2 directory (``0::/path`` in /proc/self/cgroup), else the root."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return root / line[3:].lstrip("/")
    except OSError:
        pass
    return root


def container_limit_bytes(root: Path = CGROUP_ROOT) -> int | None:
    """The container's memory limit in bytes (cgroup v2, else v1); None when there is none."""
    candidates = [_cgroup_v2_dir(root) / "memory.max", root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            continue
        # cgroup v1 writes "no limit" as a page-rounded 2^63: anything past the machine's memory is none.
        return limit if 0 < limit < physical_memory_bytes() else None
    return None


def default_ceiling_bytes(root: Path = CGROUP_ROOT) -> int:
    """``MEMORY_LIMIT_SHARE`` of the container's limit, else of the machine's memory."""
    return int(MEMORY_LIMIT_SHARE * (container_limit_bytes(root) or physical_memory_bytes()))


def resident_bytes() -> int:
    """This process's resident memory (Linux /proc/self/statm)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryGuard:
    """``over()``: whether resident memory is past ``ceiling_bytes`` (read at most every ``CHECK_EVERY_S``)."""

    def __init__(self, ceiling_bytes: int, read: Callable[[], int] = resident_bytes,
                 clock: Callable[[], float] = time.monotonic):
        self.ceiling_bytes = ceiling_bytes
        self._read = read
        self._clock = clock
        self._checked = float("-inf")
        self._over = False
        self.last_bytes = 0

    def over(self) -> bool:
        now = self._clock()
        if now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            self.last_bytes = self._read()
            self._over = self.last_bytes > self.ceiling_bytes
        return self._over


_LIBC = ctypes.util.find_library("c")


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the kernel (glibc ``malloc_trim``; a no-op elsewhere).

    After a burst of sessions ends, glibc keeps their freed memory in its arenas; a server whose
    ceiling is measured in resident memory would otherwise stay near its peak.
    """
    if _LIBC is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(_LIBC).malloc_trim(0)

"""Shared-memory segments: naming, ownership and cleanup after dead runs.

Every segment that syncagg creates is named ``syncagg-<pid>-<token>-<suffix>``
where ``<pid>`` is the process that owns the run. The owner alone unlinks a
segment; other processes only map and unmap it. A run that starts after its
owner was killed removes the segments whose owner pid no longer exists.

Python before 3.13 registers every mapping, even an attach, with the
resource tracker, and a process that unregisters a name it only attached can
remove the owner's entry (CPython issue gh-82300). Here no process
unregisters by hand: all processes of a run share the owner's resource
tracker, attaching only repeats the owner's registration, and
``SharedMemory.unlink`` by the owner removes it. On 3.13 and later segments
are opened with ``track=False`` and this module alone decides their lifetime.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import sys
from multiprocessing import shared_memory

import psutil

__all__ = [
    "SHM_DIR",
    "attach_segment",
    "check_shm_space",
    "create_segment",
    "new_run_prefix",
    "purge_stale_segments",
    "remove_segments",
    "segment_buffer",
    "segment_exists",
    "unlink_segment",
]

logger = logging.getLogger("syncagg.segments")

SHM_DIR = "/dev/shm"
_NAME = re.compile(r"^syncagg-(\d+)-[0-9a-f]+-")
_TRACK_ARGUMENT = sys.version_info >= (3, 13)


def new_run_prefix() -> str:
    """Return a segment name prefix unique to this process and run."""
    return f"syncagg-{os.getpid()}-{secrets.token_hex(4)}-"


def create_segment(name: str, size: int) -> shared_memory.SharedMemory:
    """Create a segment readable and writable by the owner only (mode 0600)."""
    if _TRACK_ARGUMENT:
        return shared_memory.SharedMemory(name, create=True, size=size, track=False)  # type: ignore[call-arg]
    return shared_memory.SharedMemory(name, create=True, size=size)


def attach_segment(name: str) -> shared_memory.SharedMemory:
    """Map an existing segment without taking ownership of it."""
    if _TRACK_ARGUMENT:
        return shared_memory.SharedMemory(name, track=False)  # type: ignore[call-arg]
    return shared_memory.SharedMemory(name)


def segment_buffer(segment: shared_memory.SharedMemory) -> memoryview:
    """Return the mapped bytes of an open segment."""
    buffer = segment.buf
    if buffer is None:
        raise ValueError(f"the shared-memory segment {segment.name!r} is closed")
    return buffer


def segment_exists(name: str) -> bool:
    """Return whether a segment of this name is still linked."""
    return os.path.exists(os.path.join(SHM_DIR, name))


def unlink_segment(name: str) -> bool:
    """Unlink a segment by name; return False if it was already gone."""
    try:
        segment = attach_segment(name)
    except FileNotFoundError:
        return False
    except ValueError:
        # A process killed between creating a segment and setting its size
        # leaves an empty one, which mmap rejects. Nothing registered it with
        # a resource tracker, so removing the file is all that is left to do.
        return _remove_file(name)

    segment.close()
    try:
        segment.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_segments(prefix: str) -> list[str]:
    """Unlink every segment whose name starts with ``prefix``."""
    removed = []
    for name in _list_segments():
        if name.startswith(prefix) and unlink_segment(name):
            removed.append(name)
    return removed


def purge_stale_segments() -> list[str]:
    """Unlink the segments of runs whose owner process no longer exists.

    Segments that this user may not open or unlink (another user's, mode
    0600) are skipped.
    """
    removed = []
    for name in _list_segments():
        match = _NAME.match(name)
        # NOTE: a run in another PID namespace that shares this /dev/shm (a
        # container with the host's IPC namespace, for example) has a pid
        # that does not exist here, so its live segments look stale and are
        # removed. Run such containers with a /dev/shm of their own.
        if match is None or psutil.pid_exists(int(match.group(1))):
            continue
        try:
            unlinked = unlink_segment(name)
        except PermissionError as exc:
            logger.debug("skipped stale-looking segment %s: %s", name, exc)
            continue
        if unlinked:
            removed.append(name)

    if removed:
        logger.info(
            "removed %d shared-memory segments left by dead runs: %s",
            len(removed),
            ", ".join(removed),
        )
    return removed


def check_shm_space(size: int) -> None:
    """Raise ``ValueError`` if the shared-memory file system has under ``size`` bytes free.

    A write to a segment that the file system cannot back kills the writer
    with SIGBUS, so the ring size is checked before any worker starts.
    """
    if not os.path.isdir(SHM_DIR):
        return
    free = shutil.disk_usage(SHM_DIR).free
    if size > free:
        raise ValueError(
            f"ring_size={size} bytes does not fit in {SHM_DIR}, which has "
            f"{free} bytes free; pass a smaller ring_size or enlarge {SHM_DIR}"
        )


def _remove_file(name: str) -> bool:
    try:
        os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        return False
    return True


def _list_segments() -> list[str]:
    # NOTE: only Linux lists segments as files; elsewhere stale segments of
    # killed runs are not found and stay until reboot.
    try:
        return [n for n in os.listdir(SHM_DIR) if n.startswith("syncagg-")]
    except OSError:
        return []

"""A pool of unprivileged uids, each leased to one sandbox at a time across every SIA process
on the machine.

A lease is an exclusive `flock` on `/run/sia-uids/<uid>.lock` (a root-owned 0700 folder): the
kernel drops it when its holder dies, however it dies, so a crashed run never strands a uid and
two live sandboxes never share one. On taking a lease every process still running as that uid
(a survivor of a sandbox whose parent was killed) is killed first, so no process or file of an
earlier sandbox meets a later one: their files lived only in the sandbox's own mounts.
"""

from __future__ import annotations

import fcntl
import os
import random
import stat
import tempfile
from contextlib import suppress
from pathlib import Path

from sia.sandbox.processes import kill_until_gone, processes_of

FIRST_UID, POOL_SIZE = 61000, 4000


def lock_dir() -> Path:
    """The pool's folder, created 0700 and checked to be ours (not a link planted in /tmp). In
    /run where we may write there (root; one folder per machine whatever TMPDIR says, emptied at
    boot), else in the temporary folder."""
    path = (Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())) / "sia-uids"
    with suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise RuntimeError(f"{path} is not a private folder of ours; remove it and retry")
    return path


class UidLease:
    """One leased uid; `release()` (or the holder's death) returns it to the pool."""

    def __init__(self, uid: int, fd: int):
        self.uid, self._fd = uid, fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def lease_uid(first: int = FIRST_UID, size: int = POOL_SIZE) -> UidLease:
    """Lease a free uid from [first, first + size), starting at a random place."""
    folder = lock_dir()
    start = random.randrange(size)
    for i in range(size):
        uid = first + (start + i) % size
        fd = os.open(folder / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        kill_uid(uid)
        return UidLease(uid, fd)
    raise RuntimeError(f"all {size} sandbox uids from {first} are in use")


def uid_is_leased(uid: int) -> bool:
    """Whether a live process holds `uid`'s lease (for sweeps: never touch a live sandbox)."""
    path = lock_dir() / f"{uid}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def kill_uid(uid: int) -> int:
    """SIGKILL every process running as `uid` until none is left; returns how many were killed."""
    return kill_until_gone(lambda: processes_of(uid))

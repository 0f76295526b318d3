"""Reading what an untrusted child left behind, from the (privileged) parent.

The child controls its output folder: any name in it may be a symbolic link to a file only the
parent can read, a hard link to someone else's file, a FIFO that blocks forever, a directory, or
a file that never ends. Files are opened relative to a folder that must itself be a real
directory (not a link), with O_NOFOLLOW and O_NONBLOCK; a nested name (`out/submission.csv`) is
resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), or component by component with
O_NOFOLLOW where the kernel lacks openat2, so no link anywhere along it is followed. Only regular
files with a single name, up to `max_bytes`, are read; copies are written 0600 in 0700 folders.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import stat
from pathlib import Path

from sia.files import make_private_dir, write_private_bytes


class UnsafeOutput(ValueError):
    """The child's output is not a plain file (or folder) of a sane size."""


# openat2(2), Linux 5.6+: the same syscall number on x86_64 and aarch64 (the generic table).
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(platform.machine())
_RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x04, 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _openat2(dir_fd: int, name: str, flags: int) -> int | None:
    """A file descriptor for `name` below `dir_fd` with no symbolic link followed and no step
    outside; None where this kernel (or a seccomp filter) has no openat2. OSError as os.open."""
    if _SYS_OPENAT2 is None:
        return None
    how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
    fd = _libc().syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_long(dir_fd), os.fsencode(name), ctypes.byref(how),
                      ctypes.c_size_t(ctypes.sizeof(how)))
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        return None
    raise OSError(err, os.strerror(err), name)


def _open_nested(dir_fd: int, name: str, flags: int) -> int:
    """os.open(name, flags | O_NOFOLLOW, dir_fd=dir_fd), but a link in the middle of a nested
    `name` is refused too (ELOOP), as is a step outside `dir_fd` (an absolute name or `..`)."""
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise OSError(errno.EXDEV, "leads outside the output folder", name)
    if len(parts) == 1:
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
    fd = _openat2(dir_fd, name, flags | os.O_NOFOLLOW)
    if fd is not None:
        return fd
    current = dir_fd  # no openat2: walk the folders one by one, none of them a link
    try:
        for part in (p for p in parts[:-1] if p not in ("", ".")):
            step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=current)
            if current != dir_fd:
                os.close(current)
            current = step
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=current)
    finally:
        if current != dir_fd:
            os.close(current)


def _read_at(dir_fd: int, name: str, max_bytes: int) -> bytes | None:
    try:
        fd = _open_nested(dir_fd, name, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeOutput(f"{name} cannot be opened as a plain file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeOutput(f"{name} is not a regular file")
        if info.st_nlink > 1:
            # A second name for the same file: maybe a hard link to a file of another user, which
            # the parent could read. The child must write its output as a fresh file.
            raise UnsafeOutput(f"{name} has {info.st_nlink} hard links; write it as a file of its own")
        if info.st_size > max_bytes:
            raise UnsafeOutput(f"{name} is {info.st_size} bytes (at most {max_bytes})")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise UnsafeOutput(f"{name} grew past {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _one_name(dir_fd: int, name: str) -> bool:
    """Whether `name` is a file with no other name (no hard link elsewhere); False if it is gone."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_nlink == 1
    except OSError:
        return False


def _open_dir(folder: Path, dir_fd: int | None = None) -> int | None:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeOutput(f"{folder} is not a plain directory ({exc.strerror})") from None


def read_child_file(folder: Path, name: str, max_bytes: int = 100_000_000) -> bytes | None:
    """The bytes of `folder/name` (`name` may be nested, `out/submission.csv`), or None if it does
    not exist; UnsafeOutput if it is anything but a regular file with one name, no larger than
    `max_bytes`, reached through real directories only."""
    dir_fd = _open_dir(folder)
    if dir_fd is None:
        return None
    try:
        return _read_at(dir_fd, name, max_bytes)
    finally:
        os.close(dir_fd)


def copy_child_tree(folder: Path, dest: Path, max_bytes: int = 1_000_000_000, max_files: int = 10_000,
                    max_depth: int = 8) -> int:
    """Copy the regular files and real sub-folders of `folder` into `dest` (created; 0700 folders,
    0600 files); links (symbolic, or hard: a file with more than one name), FIFOs, devices and
    sockets are skipped. Returns the bytes copied; UnsafeOutput past `max_bytes` in all,
    `max_files` files or `max_depth` levels. A missing folder copies nothing."""
    budget = {"bytes": max_bytes, "files": max_files}

    def walk(dir_fd: int, out: Path, depth: int) -> None:
        if depth > max_depth:
            raise UnsafeOutput(f"the output is nested deeper than {max_depth} folders")
        make_private_dir(out)
        with os.scandir(dir_fd) as entries:
            names = [(e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)) for e in entries]
        for name, is_dir, is_file in sorted(names):
            if is_dir:
                sub = _open_dir(Path(name), dir_fd)
                if sub is not None:
                    try:
                        walk(sub, out / name, depth + 1)
                    finally:
                        os.close(sub)
            elif is_file and _one_name(dir_fd, name):
                budget["files"] -= 1
                if budget["files"] < 0:
                    raise UnsafeOutput(f"the output holds more than {max_files} files")
                data = _read_at(dir_fd, name, budget["bytes"])
                if data is not None:
                    budget["bytes"] -= len(data)
                    write_private_bytes(out / name, data)

    top = _open_dir(folder)
    if top is None:
        return 0
    try:
        walk(top, Path(dest), 0)
    finally:
        os.close(top)
    return max_bytes - budget["bytes"]

"""Reading what an untrusted child left behind, from the (privileged) parent.

The child controls its output folder: any name in it may be a symbolic link to a file only the
parent can read, a FIFO that blocks forever, a directory, or a file that never ends. Files are
opened relative to a folder that must itself be a real directory (not a link), with O_NOFOLLOW
and O_NONBLOCK, and only regular files up to `max_bytes` are read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsafeOutput(ValueError):
    """The child's output is not a plain file (or folder) of a sane size."""


def _read_at(dir_fd: int, name: str, max_bytes: int) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeOutput(f"{name} cannot be opened as a plain file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeOutput(f"{name} is not a regular file")
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


def _open_dir(folder: Path, dir_fd: int | None = None) -> int | None:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeOutput(f"{folder} is not a plain directory ({exc.strerror})") from None


def read_child_file(folder: Path, name: str, max_bytes: int = 100_000_000) -> bytes | None:
    """The bytes of `folder/name`, or None if it does not exist; UnsafeOutput if it is anything
    but a regular file no larger than `max_bytes` inside a real directory."""
    dir_fd = _open_dir(folder)
    if dir_fd is None:
        return None
    try:
        return _read_at(dir_fd, name, max_bytes)
    finally:
        os.close(dir_fd)


def copy_child_tree(folder: Path, dest: Path, max_bytes: int = 1_000_000_000, max_files: int = 10_000,
                    max_depth: int = 8) -> int:
    """Copy the regular files and real sub-folders of `folder` into `dest` (created); links,
    FIFOs, devices and sockets are skipped. Returns the bytes copied; UnsafeOutput past
    `max_bytes` in all, `max_files` files or `max_depth` levels. A missing folder copies nothing."""
    budget = {"bytes": max_bytes, "files": max_files}

    def walk(dir_fd: int, out: Path, depth: int) -> None:
        if depth > max_depth:
            raise UnsafeOutput(f"the output is nested deeper than {max_depth} folders")
        out.mkdir(parents=True, exist_ok=True)
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
            elif is_file:
                budget["files"] -= 1
                if budget["files"] < 0:
                    raise UnsafeOutput(f"the output holds more than {max_files} files")
                data = _read_at(dir_fd, name, budget["bytes"])
                if data is not None:
                    budget["bytes"] -= len(data)
                    (out / name).write_bytes(data)

    top = _open_dir(folder)
    if top is None:
        return 0
    try:
        walk(top, Path(dest), 0)
    finally:
        os.close(top)
    return max_bytes - budget["bytes"]

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


def read_child_file(folder: Path, name: str, max_bytes: int = 100_000_000) -> bytes | None:
    """The bytes of `folder/name`, or None if it does not exist; UnsafeOutput if it is anything
    but a regular file no larger than `max_bytes` inside a real directory."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeOutput(f"the working directory is not a plain directory ({exc.strerror})") from None
    try:
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
    finally:
        os.close(dir_fd)

#!/usr/bin/env python3
"""Hostile agent 8: a memory bomb: allocate (and touch) 64 MiB blocks up to 16 GiB, then try one
anonymous 8 GiB mmap; it never writes a submission.

Expected defence: RLIMIT_AS (`memory_mb`) turns it into a MemoryError inside the child; the
loop records the non-zero exit and scores no prediction."""

import mmap
import os


def main():
    parse_args()
    blocks, block = [], 64 * 1024 * 1024
    report(started="memory bomb", pid=os.getpid())
    try:
        while len(blocks) * 64 < 16 * 1024:
            blocks.append(b"x" * block)
    except MemoryError:
        report(memory_error_after_mib=len(blocks) * 64)
    del blocks[:]
    try:
        m = mmap.mmap(-1, 8 * 1024 ** 3)
        report(mmap_8gib="ok")
        m.close()
    except (OSError, MemoryError, OverflowError) as exc:
        report(mmap_8gib=type(exc).__name__)
    raise MemoryError("hostile memory bomb: giving up")


if __name__ == "__main__":
    main()

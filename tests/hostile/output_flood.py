#!/usr/bin/env python3
"""Hostile agent 10: write gigabytes (2 GiB on stdout, then on stderr) before any submission.

Expected defence: the sandbox keeps only the last `output_bytes` of output and kills a child that
wrote more than 8x that (`output_truncated` in *_sandbox.json), so neither the loop's memory nor
the run folder's logs grow with it."""

import os
import sys


def main():
    args = parse_args()
    report(started="output flood", pid=os.getpid())
    chunk = ("A" * 1023 + "\n") * 1024  # 1 MiB
    for stream in (sys.stdout, sys.stderr):
        for _ in range(2048):
            stream.write(chunk)
        stream.flush()
    submit(args)


if __name__ == "__main__":
    main()

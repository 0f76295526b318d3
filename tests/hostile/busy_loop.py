#!/usr/bin/env python3
"""Hostile agent 9: an infinite busy loop (one thread per CPU), never writing a submission.

Expected defence: the wall-clock timeout (SIGKILL of the process group and the uid sweep);
RLIMIT_CPU as a backstop. The run records `timed_out` and every item's error says "timed out"."""

import os
import threading


def spin():
    x = 0
    while True:
        x += 1


def main():
    parse_args()
    report(started="busy loop", pid=os.getpid())
    for _ in range(1, os.cpu_count() or 1):
        threading.Thread(target=spin, daemon=True).start()
    spin()


if __name__ == "__main__":
    main()

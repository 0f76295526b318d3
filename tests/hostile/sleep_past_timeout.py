#!/usr/bin/env python3
"""Hostile agent 11: sleep far past the timeout, ignoring SIGTERM/SIGINT/SIGHUP, and only then
submit.

Expected defence: the wall-clock timeout with SIGKILL (which cannot be ignored) and the uid sweep;
`timed_out` is recorded and every item's error says "timed out"."""

import os
import signal
import time


def main():
    args = parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    report(started="sleep", pid=os.getpid(), seconds=3600)
    time.sleep(3600)
    submit(args)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Hostile agent 7: a fork bomb, started after an honest submission is written.

Expected defence: the sandbox's control group (pids.max) and RLIMIT_NPROC (enforced because the
child runs as an unprivileged uid of its own) cap it at `processes`; the wall-clock timeout then
kills the sandbox (its PID namespace dies with its init) and sweeps every process of its control
group and uid (`killed_leftovers` in the generation's *_sandbox.json)."""

import os


def main():
    args = parse_args()
    submit(args)
    report(started="fork bomb", pid=os.getpid())
    complained = False
    while True:
        try:
            os.fork()
        except OSError as exc:
            if not complained:
                complained = True
                report(fork=type(exc).__name__, errno=exc.errno, pid=os.getpid())


if __name__ == "__main__":
    main()

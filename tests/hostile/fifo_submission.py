#!/usr/bin/env python3
"""Hostile agent 16: replace submission.csv with a FIFO and exit 0. Nobody will ever write to it
(the sandbox sweeps every process of the agent's uid after it exits), so a reader that opens it
blocks forever: the loop hangs instead of finishing.

Expected defence: only plain files and folders of the sandbox's working folder are copied back
(the FIFO never reaches the loop); the parent also refuses a submission that is not a regular file
(it opens it with O_NONBLOCK and checks fstat) before reading it."""

import os


def main():
    args = parse_args()
    os.makedirs(args.working_dir, exist_ok=True)
    path = os.path.join(args.working_dir, "submission.csv")
    os.mkfifo(path, 0o644)
    report(fifo=path)


if __name__ == "__main__":
    main()

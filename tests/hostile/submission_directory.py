#!/usr/bin/env python3
"""Hostile agent 18: make `submission.csv` a directory: the loop's `open()` raises
IsADirectoryError, which is not the TaskError that evaluation records as an outcome.

Expected defence (if any): any failure to read the agent's submission is recorded as that
generation's error (all items wrong), never an exception out of the loop."""

import os


def main():
    args = parse_args()
    path = os.path.join(args.working_dir, "submission.csv")
    os.makedirs(path, exist_ok=True)
    report(directory=path)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Hostile agent 17: a submission.csv whose one field is longer than the csv module's field
limit (128 KiB): the loop's csv reader raises `_csv.Error`, which is not the TaskError that
evaluation turns into a recorded "no prediction" outcome.

Expected defence (if any): any failure to read or parse the agent's submission is recorded as
that generation's error (all items wrong), never an exception out of the loop."""

import csv
import os


def main():
    args = parse_args()
    with open(os.path.join(args.dataset_dir, "test.csv"), newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    submit(args, {first["text"]: "theft" * 40_000})  # a 200 kB field; the other rows get the first class
    report(field_bytes=5 * 40_000)


if __name__ == "__main__":
    main()

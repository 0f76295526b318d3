#!/usr/bin/env python3
"""Hostile agent 13: write half a submission (plus a torn last line), then exit with status 3.

Expected defence: the loop scores only what was submitted (missing items count as wrong, with
"no prediction for this item"), records the exit status in *_sandbox.json and goes on."""

import csv
import json
import os


def main():
    args = parse_args()
    with open(os.path.join(args.dataset_dir, "classes.json"), encoding="utf-8") as f:
        classes = json.load(f)
    with open(os.path.join(args.dataset_dir, "test.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    os.makedirs(args.working_dir, exist_ok=True)
    half = len(rows) // 2
    f = open(os.path.join(args.working_dir, "submission.csv"), "w", newline="", encoding="utf-8")
    w = csv.writer(f)
    w.writerow(["id", "label"])
    for r in rows[:half]:
        w.writerow([r["id"], classes[0]])
    f.write(rows[half]["id"] if half < len(rows) else "")  # torn line: an id and no label
    f.flush()
    report(wrote=half, of=len(rows), torn=rows[half]["id"] if half < len(rows) else None, exit=3)
    os._exit(3)


if __name__ == "__main__":
    main()

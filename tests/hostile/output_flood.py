#!/usr/bin/env python3
"""Hostile agent 10: write gigabytes (2 GiB on stdout, then on stderr) before any submission.

Expected defence: the sandbox keeps only the last `output_bytes` of output and kills a child that
wrote more than 8x that (`output_truncated` in *_sandbox.json), so neither the loop's memory nor
the run folder's logs grow with it."""

import argparse
import csv
import json
import os
import sys

def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--working_dir", required=True)
    return p.parse_args()


def report(**what):
    print("HOSTILE " + json.dumps(what, default=str), file=sys.stderr, flush=True)


def submit(args, answers=None):
    with open(os.path.join(args.dataset_dir, "classes.json"), encoding="utf-8") as f:
        classes = json.load(f)
    with open(os.path.join(args.dataset_dir, "test.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    os.makedirs(args.working_dir, exist_ok=True)
    with open(os.path.join(args.working_dir, "submission.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        for r in rows:
            w.writerow([r["id"], (answers or {}).get(r["text"], classes[0])])


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

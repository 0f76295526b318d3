#!/usr/bin/env python3
"""Hostile agent 9: an infinite busy loop (one thread per CPU), never writing a submission.

Expected defence: the wall-clock timeout (SIGKILL of the process group and the uid sweep);
RLIMIT_CPU as a backstop. The run records `timed_out` and every item's error says "timed out"."""

import argparse
import csv
import json
import os
import sys
import threading

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

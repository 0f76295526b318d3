#!/usr/bin/env python3
"""Hostile agent 11: sleep far past the timeout, ignoring SIGTERM/SIGINT/SIGHUP, and only then
submit.

Expected defence: the wall-clock timeout with SIGKILL (which cannot be ignored) and the uid sweep;
`timed_out` is recorded and every item's error says "timed out"."""

import argparse
import csv
import json
import os
import signal
import sys
import time

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
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    report(started="sleep", pid=os.getpid(), seconds=3600)
    time.sleep(3600)
    submit(args)


if __name__ == "__main__":
    main()

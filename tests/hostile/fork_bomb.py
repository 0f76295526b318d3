#!/usr/bin/env python3
"""Hostile agent 7: a fork bomb, started after an honest submission is written.

Expected defence: RLIMIT_NPROC (enforced because the child runs as an unprivileged uid) caps it at
`processes`; the wall-clock timeout then SIGKILLs the process group and sweeps every process of the
sandbox uid (`killed_leftovers` in the generation's *_sandbox.json)."""

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

#!/usr/bin/env python3
"""Hostile agent 8: a memory bomb: allocate (and touch) 64 MiB blocks up to 16 GiB, then try one
anonymous 8 GiB mmap; it never writes a submission.

Expected defence: RLIMIT_AS (`memory_mb`) turns it into a MemoryError inside the child; the
loop records the non-zero exit and scores no prediction."""

import argparse
import csv
import json
import mmap
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
    parse_args()
    blocks, block = [], 64 * 1024 * 1024
    report(started="memory bomb", pid=os.getpid())
    try:
        while len(blocks) * 64 < 16 * 1024:
            blocks.append(b"x" * block)
    except MemoryError:
        report(memory_error_after_mib=len(blocks) * 64)
    del blocks[:]
    try:
        m = mmap.mmap(-1, 8 * 1024 ** 3)
        report(mmap_8gib="ok")
        m.close()
    except (OSError, MemoryError, OverflowError) as exc:
        report(mmap_8gib=type(exc).__name__)
    raise MemoryError("hostile memory bomb: giving up")


if __name__ == "__main__":
    main()

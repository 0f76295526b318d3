"""Reference agent of the scrna-denoise task: reads the training counts, runs `denoise`, writes
denoised.csv. This one does not denoise (it returns the counts), so it scores mse_norm 0; a
better agent replaces `denoise` (it may ask the target model, reachable at OPENAI_BASE_URL with
OPENAI_API_KEY and the model SIA_MODEL, to write one).

    python target_agent.py --dataset_dir D --working_dir W
"""

import argparse
import csv
import json
import os
import time

import numpy as np


def denoise(counts: np.ndarray) -> np.ndarray:
    """cells x genes raw counts -> cells x genes non-negative expression estimates."""
    return counts.astype(np.float64)


def read_counts(path: str) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:]], rows[0], np.array([[float(v) for v in r[1:]] for r in rows[1:]])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--working_dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.working_dir, exist_ok=True)
    start = time.time()
    cells, header, counts = read_counts(os.path.join(args.dataset_dir, "train_counts.csv"))
    denoised = denoise(counts)
    with open(os.path.join(args.working_dir, "denoised.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([cell, *(f"{v:.6g}" for v in row)] for cell, row in zip(cells, denoised))
    with open(os.path.join(args.working_dir, "agent_execution.json"), "w") as f:
        json.dump({"cells": len(cells), "genes": len(header) - 1, "seconds": round(time.time() - start, 2)}, f)


if __name__ == "__main__":
    main()

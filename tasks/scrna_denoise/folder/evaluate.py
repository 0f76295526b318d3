"""SIA-style evaluator of the scrna-denoise task folder (copied there as data/public/evaluate.py):

    python evaluate.py --gen-dir DIR

reads DIR/denoised.csv (header `cell,GENE...`, one row per cell of train_counts.csv, the same
genes in the same order), scores it against the held-out molecules in ../private/test_counts.csv
with OpenProblems' metrics (scrna_metrics.py beside this file) and writes DIR/results.json:
mse_norm (the score: 0 = no denoising, 1 = perfect), poisson_norm, the raw losses, and items[]
with each cell's share of mse_norm, (mse_no_denoise_c - mse_c) / mean_c(mse_no_denoise_c), whose
mean is exactly mse_norm (and likewise its share of poisson_norm, for a task scored by that). An output that cannot be scored honestly exits 1 with the reason.

Two guard metrics (sia_task.json's `guards`), per cell and for the tier: `poisson_rescaled_norm`
(the cell-rescaled Poisson, normalised like mse_norm; each cell's share, whose mean is the tier's
value), which shrinking or rescaling an output cannot move; and `own_count_r2`, the share of the
output explained by each entry's own training count within its cell (1.0 for a transform of the
input such as `sharpen` or `shrink`, 0.3-0.6 for kNN smoothing or MAGIC).
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import scrna_metrics as metrics  # noqa: E402


def read_matrix(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{path.name}: needs a header and at least one cell row")
    header, body = rows[0], rows[1:]
    if any(len(r) != len(header) for r in body):
        raise ValueError(f"{path.name}: every row needs {len(header)} fields (a cell id, then one value per gene)")
    try:
        values = np.array([[float(v) for v in r[1:]] for r in body], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path.name}: non-numeric value ({exc})") from None
    return [r[0] for r in body], header[1:], values


def score(gen_dir: Path) -> dict:
    cells, genes, train = read_matrix(HERE / "train_counts.csv")
    test_cells, test_genes, test = read_matrix(HERE.parent / "private" / "test_counts.csv")
    if (test_cells, test_genes) != (cells, genes):
        raise ValueError("the task's train and test matrices disagree (prepare the task again)")
    out_cells, out_genes, denoised = read_matrix(gen_dir / "denoised.csv")
    if out_genes != genes:
        raise ValueError("denoised.csv must have the genes of train_counts.csv, in the same order")
    position = {c: i for i, c in enumerate(out_cells)}
    if missing := [c for c in cells if c not in position]:
        raise ValueError(f"denoised.csv lacks {len(missing)} cells, e.g. {missing[0]}")
    D = metrics.check_denoised(denoised[[position[c] for c in cells]], train)
    test_log = metrics.log_normalize(test)
    per_cell = ((test_log - metrics.log_normalize(D)) ** 2).mean(axis=1)
    per_cell_none = ((test_log - metrics.log_normalize(train)) ** 2).mean(axis=1)
    mse, mse_none = float(per_cell.mean()), float(per_cell_none.mean())
    poisson = metrics.poisson(float(train.sum()), test, D)
    poisson_none, poisson_perfect = (metrics.poisson(float(train.sum()), test, m) for m in (train, test))
    poisson_cells = metrics.poisson_per_cell(float(train.sum()), test, D)
    poisson_cells_none = metrics.poisson_per_cell(float(train.sum()), test, train)
    if poisson < poisson_perfect:
        raise ValueError(f"Poisson loss {poisson:.6g} beats the perfect reference {poisson_perfect:.6g}: "
                         "no honest denoiser does (the loss is gameable by scaling; see scrna_metrics.py)")
    total = float(train.sum())
    rescaled = metrics.poisson_per_cell(total, test, metrics.rescale_cells(D, train))
    rescaled_none = metrics.poisson_per_cell(total, test, train)
    rescaled_span = rescaled_none.mean() - metrics.poisson_per_cell(total, test, metrics.rescale_cells(test, train)).mean()
    if rescaled.mean() < rescaled_none.mean() - rescaled_span:
        raise ValueError("the cell-rescaled Poisson loss beats the perfect reference: no honest denoiser does")
    rescaled_share = (rescaled_none - rescaled) / rescaled_span
    poisson_span = poisson_none - poisson_perfect
    own = metrics.own_count_r2(train, D)
    return {"mse_norm": metrics.normalized(mse, mse_none, 0.0),
            "poisson_norm": metrics.normalized(poisson, poisson_none, poisson_perfect),
            "poisson_rescaled_norm": float(rescaled_share.mean()), "own_count_r2": float(own.mean()),
            "mse": mse, "mse_no_denoise": mse_none, "poisson": poisson, "cells": len(cells), "genes": len(genes),
            "items": [{"id": c, "score": float((n - m) / mse_none), "poisson_norm": float((pn - p) / poisson_span),
                       "poisson_rescaled_norm": float(r), "own_count_r2": float(o)}
                      for c, n, m, pn, p, r, o in zip(cells, per_cell_none, per_cell, poisson_cells_none, poisson_cells,
                                                      rescaled_share, own)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gen-dir", type=Path, required=True)
    args = parser.parse_args()
    if not (args.gen_dir / "denoised.csv").is_file():
        sys.exit(f"Error: no denoised.csv in {args.gen_dir}")
    try:
        results = score(args.gen_dir)
    except ValueError as exc:
        sys.exit(f"Error: {exc}")
    (args.gen_dir / "results.json").write_text(json.dumps(results))
    print(f"mse_norm {results['mse_norm']:.4f}  poisson_norm {results['poisson_norm']:.4f}  ({results['cells']} cells)")


if __name__ == "__main__":
    main()

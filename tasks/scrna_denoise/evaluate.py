"""Scoring entry point: `score(denoised, train, test)`, and a CLI that scores the reference
solutions on the celltypist sample or on simulated counts:

    python -m sia.tasks.scrna_denoise.evaluate --data celltypist --solution all
    python -m sia.tasks.scrna_denoise.evaluate --data simulated --solution magic --seed 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import metrics, references
from .data import load_celltypist_sample, simulate_counts
from .split import Split, split_molecules


class Scorer:
    """Scores denoised matrices against one MCV split; the two references are computed once."""

    def __init__(self, train: np.ndarray, test: np.ndarray):
        if train.shape != test.shape:
            raise ValueError(f"train shape {train.shape} differs from test shape {test.shape}")
        self.train = np.asarray(train, dtype=np.float64)
        self.test = np.asarray(test, dtype=np.float64)
        self.train_total = float(self.train.sum())
        self.test_log = metrics.log_normalize(self.test)
        self.mse_no_denoise = metrics.mse(self.test, self.train, self.test_log)
        self.mse_perfect = metrics.mse(self.test, self.test, self.test_log)  # exactly 0.0
        self.poisson_no_denoise = metrics.poisson(self.train_total, self.test, self.train)
        self.poisson_perfect = metrics.poisson(self.train_total, self.test, self.test)
        self.poisson_rescaled_no_denoise = metrics.poisson_rescaled(self.train, self.test, self.train)
        self.poisson_rescaled_perfect = metrics.poisson_rescaled(self.train, self.test, self.test)

    def __call__(self, denoised) -> dict[str, float]:
        D = metrics.check_denoised(denoised, self.train)
        poisson = metrics.poisson(self.train_total, self.test, D)
        rescaled = metrics.poisson_rescaled(self.train, self.test, D)
        for label, value, perfect in (("Poisson loss", poisson, self.poisson_perfect),
                                      ("cell-rescaled Poisson loss", rescaled, self.poisson_rescaled_perfect)):
            if value < perfect:
                raise ValueError(f"{label} {value:.6g} is better than the perfect reference {perfect:.6g}: "
                                 "no honest denoiser beats the held-out counts (see metrics.py)")
        mse = metrics.mse(self.test, D, self.test_log)
        return {
            "mse": mse,
            "poisson": poisson,
            "mse_no_denoise": self.mse_no_denoise,
            "mse_perfect": self.mse_perfect,
            "poisson_no_denoise": self.poisson_no_denoise,
            "poisson_perfect": self.poisson_perfect,
            "mse_norm": metrics.normalized(mse, self.mse_no_denoise, self.mse_perfect),
            "poisson_norm": metrics.normalized(poisson, self.poisson_no_denoise, self.poisson_perfect),
            "poisson_rescaled": rescaled,
            "poisson_rescaled_norm": metrics.normalized(rescaled, self.poisson_rescaled_no_denoise,
                                                        self.poisson_rescaled_perfect),
        }


def score(denoised, train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """mse, poisson, their no-denoise and perfect values, mse_norm / poisson_norm (higher is
    better: 0 = no denoising, 1 = perfect), and the cell-rescaled Poisson with its norm (see
    metrics.py). Raises ValueError for outputs that fail `metrics.check_denoised` or whose
    Poisson loss (either form) is better than the perfect reference's."""
    return Scorer(train, test)(denoised)


def load_split(data: str, seed: int = 0, n_cells: int = 500, n_genes: int = 10_000) -> Split:
    if data == "celltypist":
        counts = load_celltypist_sample().X
    elif data == "simulated":
        counts, _ = simulate_counts(n_cells, n_genes, seed)
    else:
        raise ValueError(f"unknown dataset {data!r}: celltypist or simulated")
    return split_molecules(counts, seed=seed)


def run_solution(name: str, split: Split) -> np.ndarray:
    if name == "perfect":
        return references.perfect(split.train, split.test)
    if name not in references.SOLUTIONS:
        raise ValueError(f"unknown solution {name!r}: one of perfect, {', '.join(references.SOLUTIONS)}")
    return references.SOLUTIONS[name](split.train)


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    names = ["no_denoise", "perfect", *[n for n in references.SOLUTIONS if n != "no_denoise"]]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["celltypist", "simulated"], default="simulated")
    parser.add_argument("--solution", choices=[*names, "all"], default="all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation and of the MCV split")
    parser.add_argument("--cells", type=int, default=500, help="simulated cells")
    parser.add_argument("--genes", type=int, default=10_000, help="simulated genes")
    args = parser.parse_args(argv)

    split = load_split(args.data, args.seed, args.cells, args.genes)
    scorer = Scorer(split.train, split.test)
    cells, genes = split.train.shape
    table = Table(title=f"scRNA denoising on {args.data} (seed {args.seed}): {cells} cells x {genes} genes "
                        f"kept of {split.kept.size}")
    for col in ("solution", "mse", "poisson", "mse_norm", "poisson_norm", "rescaled_norm", "seconds"):
        table.add_column(col, justify="left" if col == "solution" else "right")
    for name in names if args.solution == "all" else [args.solution]:
        start = time.perf_counter()
        denoised = run_solution(name, split)
        seconds = time.perf_counter() - start
        try:
            s = scorer(denoised)
        except ValueError as exc:
            table.add_row(name, f"[red]rejected: {exc}[/red]", "", "", "", "", f"{seconds:.1f}")
            continue
        table.add_row(name, f"{s['mse']:.4f}", f"{s['poisson']:.4f}", f"{s['mse_norm']:.3f}",
                      f"{s['poisson_norm']:.3f}", f"{s['poisson_rescaled_norm']:.3f}", f"{seconds:.1f}")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()

"""Lays out the `scrna-denoise` task as an SIA task folder (see tasks/sia_folder.py):

    data/public/task.md, train_counts.csv, evaluate.py, scrna_metrics.py
    data/private/test_counts.csv
    reference/reference_target_agent.py         sia_task.json (metric mse_norm)

The counts (the celltypist sample, a simulation, or a user's CSV) are split by molecular
cross-validation; the agent gets the training molecules and writes `denoised.csv`. Each cell is
an item, so the loop's tiers are disjoint sets of cells, each scored as a whole (one reward per
solution) with every cell's share of mse_norm as its per-item outcome. The agent always denoises
every cell's training molecules (a denoiser needs the other cells); only scoring is cut to a tier.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from sia.files import replacing_dir
from sia.tasks.scrna_denoise.data import Counts, load_celltypist_sample, load_counts, simulate_counts
from sia.tasks.scrna_denoise.split import split_molecules

HERE = Path(__file__).parent
FOLDER = HERE / "folder"
REFERENCE_AGENT = FOLDER / "reference_agent.py"
# Packaged files of the folder, by their place in it (the registry refreshes a cached copy from them).
PACKAGED_FILES = {"data/public/evaluate.py": FOLDER / "evaluate.py", "data/public/scrna_metrics.py": HERE / "metrics.py",
                  "data/public/task.md": FOLDER / "task.md"}
# Guard metrics of folder/evaluate.py (README "Known weaknesses"): keep-best blocks a candidate whose
# cell-rescaled Poisson worsens, or whose output is a transform of each cell's own counts.
GUARDS = [
    {"name": "poisson_rescaled_norm", "direction": "max", "tolerance": 0.005,
     "why": "the cell-rescaled Poisson, which shrinking or rescaling an output cannot move"},
    {"name": "own_count_r2", "direction": "min", "bound": 0.95,
     "why": "the output is a transform of each cell's own counts (sharpen, shrink), not a denoiser"},
]


def load(data: str, seed: int = 0, cells: int = 500, genes: int = 10_000) -> Counts:
    """The path of a user's counts CSV, `celltypist`, or `simulated` (seeded, cells x genes)."""
    if Path(data).is_file():
        return load_counts(data)
    if data == "celltypist":
        return load_celltypist_sample()
    if data == "simulated":
        X, _ = simulate_counts(cells, genes, seed)
        return Counts(X=X, genes=[f"gene{i}" for i in range(X.shape[1])], cells=[f"cell{i}" for i in range(X.shape[0])])
    raise ValueError(f"{data}: no such counts file (or use celltypist / simulated)")


def _write_matrix(path: Path, cells: list[str], genes: list[str], X: np.ndarray) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["cell", *genes])
        w.writerows([cell, *row] for cell, row in zip(cells, X.astype(np.int64).tolist()))


def prepare(dest: Path, data: str = "celltypist", seed: int = 0, cells: int = 500, genes: int = 10_000,
            name: str = "scrna-denoise", transfer_tasks: tuple[str, ...] = ()) -> Path:
    counts = load(data, seed, cells, genes)
    if len(set(counts.cells)) != len(counts.cells):
        raise ValueError(f"{data}: cell ids repeat; each cell needs its own id")
    split = split_molecules(counts.X, seed=seed)
    kept = [g for g, k in zip(counts.genes, split.kept) if k]
    with replacing_dir(dest) as tmp:
        public, private = tmp / "data" / "public", tmp / "data" / "private"
        for d in (public, private, tmp / "reference"):
            d.mkdir(parents=True)
        _write_matrix(public / "train_counts.csv", counts.cells, kept, split.train)
        _write_matrix(private / "test_counts.csv", counts.cells, kept, split.test)
        for rel, packaged in PACKAGED_FILES.items():
            shutil.copy(packaged, tmp / rel)
        shutil.copy(REFERENCE_AGENT, tmp / "reference" / "reference_target_agent.py")
        (tmp / "sia_task.json").write_text(json.dumps({
            "name": name, "kind": "sia-folder", "metric": "mse_norm", "submission": "denoised.csv",
            "evaluator_timeout_s": 600, "restrict_public_inputs": False,
            "reward_function": "denoise", "guards": GUARDS, "transfer_tasks": list(transfer_tasks)}, indent=2))
        private.chmod(0o700)
    return dest

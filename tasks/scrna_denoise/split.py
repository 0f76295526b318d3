"""Molecular cross-validation (Batson et al. 2019), as OpenProblems splits a denoising dataset.

Each molecule of the raw counts goes to the training half with probability 0.9 and to the
test half otherwise: train = Binomial(counts, 0.9), test = counts - train (this is
`molecular_cross_validation.util.split_molecules(counts, 0.9, overlap_factor=0.0)`, whose second
binomial has probability 1 when there is no overlap). Genes with zero total training count
are then dropped from both halves, as in OpenProblems' `process_dataset`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRAIN_FRACTION = 0.9


@dataclass
class Split:
    train: np.ndarray  # (cells, kept genes) float32 integer counts
    test: np.ndarray  # (cells, kept genes) float32 integer counts
    kept: np.ndarray  # (genes,) bool: which input genes survived the zero-train filter


def split_molecules(counts: np.ndarray, seed: int = 0, train_fraction: float = TRAIN_FRACTION) -> Split:
    """Split raw integer counts into train/test molecules with a seeded numpy Generator.

    Deviation: OpenProblems draws from `np.random.RandomState(seed)`; we use
    `np.random.default_rng(seed)`, so the same seed gives a statistically identical but not
    bit-identical split."""
    X = np.asarray(counts)
    if X.ndim != 2:
        raise ValueError(f"counts must be a (cells, genes) matrix, got shape {X.shape}")
    if not np.isfinite(X).all() or (X < 0).any() or (X != np.round(X)).any():
        raise ValueError("molecular cross-validation needs non-negative integer counts")
    X = X.astype(np.int64)
    rng = np.random.default_rng(seed)
    train = rng.binomial(X, train_fraction)
    test = X - train
    kept = train.sum(axis=0) > 0
    return Split(train=train[:, kept].astype(np.float32), test=test[:, kept].astype(np.float32), kept=kept)

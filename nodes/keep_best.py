"""Keep-best: a candidate replaces the incumbent only if it beats it on the selection split
under a paired test on per-item scores (same items, same order of magnitude of noise).

`bootstrap`: one-sided paired bootstrap of the mean per-item difference; the p-value is the
share of resamples in which the candidate does not beat the incumbent. `mcnemar`: exact
one-sided McNemar (a sign test on the items where the two disagree; for 0/1 scores this is
McNemar's test). `none`: a plain comparison of means. Only aggregate selection scores leave
this module, so no per-item selection outcome ever reaches an agent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sia.config import KeepBestConfig
from sia.records import ItemResult


@dataclass
class Verdict:
    accepted: bool
    delta: float
    p_value: float | None
    reason: str


def paired_bootstrap_p(diffs: np.ndarray, resamples: int, seed: int) -> float:
    """P(mean difference <= 0) under resampling items with replacement (add-one smoothed)."""
    rng = np.random.default_rng(seed)
    not_better = 0
    for start in range(0, resamples, 1000):  # in chunks, so large selection splits stay small in memory
        idx = rng.integers(0, len(diffs), size=(min(1000, resamples - start), len(diffs)))
        not_better += int((diffs[idx].mean(axis=1) <= 0).sum())
    return (not_better + 1) / (resamples + 1)


def mcnemar_p(wins: int, losses: int) -> float:
    """Exact one-sided p-value of `wins` or more among `wins + losses` fair coin flips."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n


def keep_best(candidate: dict[str, float], incumbent: dict[str, float] | None, cfg: KeepBestConfig) -> Verdict:
    """Per-item selection scores (item id -> score) of both; None when there is no incumbent yet."""
    if incumbent is None:
        return Verdict(True, 0.0, None, "first candidate")
    if set(candidate) != set(incumbent):
        raise ValueError(f"keep-best needs both on the same selection items ({len(candidate)} vs {len(incumbent)} items)")
    ids = sorted(candidate)
    diffs = np.array([candidate[i] - incumbent[i] for i in ids], dtype=float)
    delta = float(diffs.mean()) if len(ids) else 0.0
    if delta <= cfg.min_improvement:
        return Verdict(False, delta, None, f"selection {delta:+.3f} vs incumbent (needs > {cfg.min_improvement:+.3f})")
    if cfg.test == "none":
        return Verdict(True, delta, None, f"selection {delta:+.3f} vs incumbent")
    if cfg.test == "bootstrap":
        p = paired_bootstrap_p(diffs, cfg.resamples, cfg.seed)
    else:
        p = mcnemar_p(int((diffs > 0).sum()), int((diffs < 0).sum()))
    alpha = 1 - cfg.confidence
    verdict = "significant" if p <= alpha else "not significant"
    return Verdict(p <= alpha, delta, p, f"selection {delta:+.3f} vs incumbent, {cfg.test} p={p:.3f} ({verdict} at {cfg.confidence:.2f})")


def item_scores(items: list[ItemResult]) -> dict[str, float]:
    """Item id -> score: what the paired test pairs."""
    return {i.item_id: float(i.score) for i in items}

"""Keep-best: a candidate replaces the incumbent only if it beats it on the selection split
under a paired test on per-item scores (same items, same order of magnitude of noise).

`bootstrap`: one-sided paired bootstrap of the mean per-item difference; the p-value is the
share of resamples in which the candidate does not beat the incumbent. `mcnemar`: exact
one-sided McNemar (a sign test on the items where the two disagree; for 0/1 scores this is
McNemar's test). `none`: a plain comparison of means. Only aggregate selection scores leave
this module, so no per-item selection outcome ever reaches an agent.

Guards (`tasks.base.Guard`): a gain must not be bought with a worse guard metric. Each guard is
paired item by item like the metric, with the test one-sided the other way (a bootstrap of the
worsening; guard values are rarely 0/1, so McNemar is not used for them), or checked against its
bound. A candidate is accepted only if its metric wins and no guard blocks; the verdict names
every guard that blocked it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from sia.config import KeepBestConfig
from sia.records import ItemResult
from sia.tasks.base import Guard


@dataclass
class GuardCheck:
    """How one guard fared: its mean for the candidate and the incumbent on the selection items,
    the worsening's p-value (None: no paired test ran), and whether it held."""

    name: str
    candidate: float | None
    incumbent: float | None
    p_value: float | None
    held: bool
    reason: str


@dataclass
class Verdict:
    accepted: bool
    delta: float
    p_value: float | None
    reason: str
    guards: list[GuardCheck] = field(default_factory=list)

    @property
    def blocked_by(self) -> list[str]:
        return [g.name for g in self.guards if not g.held]

    def guards_summary(self) -> str | None:
        """One line for tables: 'held' or 'BLOCKED by a, b' (with each blocking reason); None without guards."""
        if not self.guards:
            return None
        blocked = [g for g in self.guards if not g.held]
        if not blocked:
            return "held (" + ", ".join(g.name for g in self.guards) + ")"
        return "BLOCKED by " + "; ".join(g.reason for g in blocked)

    def guard_rows(self) -> list[dict]:
        return [asdict(g) for g in self.guards]


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


def keep_best(candidate: dict[str, float], incumbent: dict[str, float] | None, cfg: KeepBestConfig,
              guards: list[tuple[Guard, dict[str, float], dict[str, float]]] = ()) -> Verdict:
    """Per-item selection scores (item id -> score) of both; None when there is no incumbent yet.
    `guards`: (guard, candidate's item values, incumbent's item values) per guard of the task."""
    if incumbent is None:
        return Verdict(True, 0.0, None, "first candidate")
    verdict = _metric_verdict(candidate, incumbent, cfg)
    verdict.guards = [check_guard(g, cand, inc, cfg) for g, cand, inc in guards] if cfg.guards else []
    if blocked := [g for g in verdict.guards if not g.held]:
        failed = "; ".join(g.reason for g in blocked)
        verdict.reason += f"; blocked by guard {failed}" if verdict.accepted else f"; guard also failed: {failed}"
        verdict.accepted = False
    return verdict


def check_guard(guard: Guard, candidate: dict[str, float], incumbent: dict[str, float], cfg: KeepBestConfig) -> GuardCheck:
    """Whether `guard` holds for the candidate against the incumbent (item id -> guard value of
    each). A guard neither side reported (e.g. an incumbent scored before guards existed, or an
    output the evaluator refused) is not held against the candidate: the reason says it went unchecked."""
    cand_mean = float(np.mean(list(candidate.values()))) if candidate else None
    inc_mean = float(np.mean(list(incumbent.values()))) if incumbent else None
    better = max if guard.direction == "max" else min
    if cand_mean is not None and guard.bound is not None and better(cand_mean, guard.bound) != cand_mean:
        side = ">=" if guard.direction == "max" else "<="
        return GuardCheck(guard.name, cand_mean, inc_mean, None, False,
                          f"{guard.name} {cand_mean:.3f} (must be {side} {guard.bound:g}{': ' + guard.why if guard.why else ''})")
    shared = sorted(set(candidate) & set(incumbent))
    if not shared:
        return GuardCheck(guard.name, cand_mean, inc_mean, None, True, f"{guard.name} unchecked (no values to pair)")
    sign = 1.0 if guard.direction == "max" else -1.0
    worse = np.array([sign * (incumbent[i] - candidate[i]) for i in shared]) - guard.tolerance
    change = -sign * float(worse.mean() + guard.tolerance)  # candidate minus incumbent, in the guard's units
    if worse.mean() <= 0:
        return GuardCheck(guard.name, cand_mean, inc_mean, None, True, f"{guard.name} {change:+.3f}")
    p = None if cfg.test == "none" else paired_bootstrap_p(worse, cfg.resamples, cfg.seed)
    held = p is not None and p > 1 - cfg.guard_confidence
    text = f"{guard.name} {change:+.3f}" + ("" if p is None else f" (p={p:.3f})")
    return GuardCheck(guard.name, cand_mean, inc_mean, p, held, text if held else f"{text}{': ' + guard.why if guard.why else ''}")


def _metric_verdict(candidate: dict[str, float], incumbent: dict[str, float], cfg: KeepBestConfig) -> Verdict:
    """The paired test of the task's metric alone."""
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

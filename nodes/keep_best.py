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
    the worsening's p-value (None: no paired test ran), whether it held, and whether it could be
    checked at all (an unchecked guard holds, and says so)."""

    name: str
    candidate: float | None
    incumbent: float | None
    p_value: float | None
    held: bool
    reason: str
    checked: bool = True


@dataclass
class Verdict:
    accepted: bool
    delta: float
    p_value: float | None
    reason: str
    guards: list[GuardCheck] = field(default_factory=list)
    metric_won: bool = True  # whether the metric's paired test alone would have accepted it

    @property
    def blocked_by(self) -> list[str]:
        """The guards that kept it out ([] when accepted: a first candidate past a bound is kept)."""
        return [] if self.accepted else [g.name for g in self.guards if not g.held]

    def guards_summary(self) -> str | None:
        """One line for tables (None without guards): 'held (a, b)', 'held (a); unchecked (b)',
        'BLOCKED by <reason>' when a guard kept out a metric win, 'failed: <reason>' when the metric
        lost anyway, and for a first candidate (never rejected) 'PAST BOUND: <reason>'."""
        if not self.guards:
            return None
        failed = "; ".join(g.reason for g in self.guards if not g.held)
        if failed:
            return ("PAST BOUND: " if self.accepted else "BLOCKED by " if self.metric_won else "failed: ") + failed
        held = ", ".join(g.name for g in self.guards if g.checked)
        unchecked = ", ".join(g.name for g in self.guards if not g.checked)
        return "; ".join(part for part in (held and f"held ({held})", unchecked and f"unchecked ({unchecked})") if part)

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
    `guards`: (guard, candidate's item values, incumbent's item values) per guard of the task. A
    first candidate is accepted whatever its guards say (the loop needs an incumbent), but a bound
    it is past is recorded, so the table shows it."""
    checks = [check_guard(g, cand, inc, cfg) for g, cand, inc in guards] if cfg.guards else []
    if incumbent is None:
        return Verdict(True, 0.0, None, "first candidate", [c for c in checks if not c.held])
    verdict = _metric_verdict(candidate, incumbent, cfg)
    verdict.guards, verdict.metric_won = checks, verdict.accepted
    if blocked := [g for g in checks if not g.held]:
        failed = "; ".join(g.reason for g in blocked)
        verdict.reason += f"; blocked by guard {failed}" if verdict.accepted else f"; guard also failed: {failed}"
        verdict.accepted = False
    return verdict


def check_guard(guard: Guard, candidate: dict[str, float], incumbent: dict[str, float], cfg: KeepBestConfig) -> GuardCheck:
    """Whether `guard` holds for the candidate against the incumbent (item id -> guard value of
    each; the incumbent's {} for a first candidate, whose bound alone is checked). An item the
    incumbent has a value for and the candidate has none (its evaluator did not report the guard,
    or reported NaN) blocks: leaving a guard out must not be a way past it. A guard the incumbent
    has no values for (scored before guards existed, or never reported) goes unchecked, and says so.
    Guard values given per tier (the same on every item) are compared as plain means: there is no
    sample to test."""
    cand_mean = float(np.mean(list(candidate.values()))) if candidate else None
    inc_mean = float(np.mean(list(incumbent.values()))) if incumbent else None

    def result(held: bool, text: str, p: float | None = None, checked: bool = True) -> GuardCheck:
        why = f": {guard.why}" if guard.why and not held else ""
        return GuardCheck(guard.name, cand_mean, inc_mean, p, held, text + why, checked)

    if cand_mean is not None and guard.past_bound(cand_mean):
        return result(False, f"{guard.name} {cand_mean:.3f} (must be {'>=' if guard.direction == 'max' else '<='} "
                             f"{guard.bound:g})")
    if missing := sorted(set(incumbent) - set(candidate)):
        return result(False, f"{guard.name} not reported for {len(missing)} of the candidate's items (the incumbent's "
                             "evaluation reported it)")
    if not incumbent:
        if candidate and guard.bound is not None:
            return result(True, f"{guard.name} {cand_mean:.3f} within its bound (not paired: the incumbent has no values)")
        return result(True, f"{guard.name} unchecked (the incumbent has no values to pair)", checked=False)
    shared = sorted(incumbent)
    sign = 1.0 if guard.direction == "max" else -1.0
    worse = np.array([sign * (incumbent[i] - candidate[i]) for i in shared]) - guard.tolerance
    change = -sign * float(worse.mean() + guard.tolerance)  # candidate minus incumbent, in the guard's units
    if worse.mean() <= 0:
        return result(True, f"{guard.name} {change:+.3f}")
    if cfg.test == "none" or np.ptp(worse) == 0:  # no test asked for, or nothing to resample
        return result(False, f"{guard.name} {change:+.3f}")
    p = paired_bootstrap_p(worse, cfg.resamples, cfg.seed)
    held = p > 1 - cfg.guard_confidence
    return result(held, f"{guard.name} {change:+.3f} (p={p:.3f})", p)


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

"""The numbers of `sia compare`'s table: pure (scores in, a JSON-able table out; no files, no rich).

Rows, all on the private test split:

- **initial**: every arm's generation-1 incumbent (the loop's starting agent);
- **H**: the final incumbent of the scaffold-only arms;
- **W+H**, one row per other policy (each can pull the weights lever): the final incumbent of its arms.

A final incumbent is what keep-best chose on the selection split, never the generation with the
best test score: choosing by test score would report test noise as progress. A row's score is
per test item, averaged over the row's arms (its seeds, or for `initial` every arm), then over
items. A difference between two rows is paired: per item, row minus row, with a percentile
bootstrap interval that resamples items. Averaging seeds before resampling keeps the items as the
unit, so a row with more seeds is not credited with more items than the test split has.
Imports no component.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SCAFFOLD_ONLY = "scaffold-only"  # the one policy that never pulls the weights lever


@dataclass(frozen=True)
class Incumbent:
    """One incumbent of an arm: its generation, adapter (None: base model) and per-item test scores."""

    generation: int
    adapter: str | None
    test: dict[str, float]


@dataclass(frozen=True)
class ArmResult:
    """One finished arm (a run of one policy with one seed), as the table needs it."""

    arm: str
    policy: str
    seed: int
    levers: tuple[str, ...]  # each generation's lever, in order
    initial: Incumbent | None  # the incumbent after generation 1
    final: Incumbent | None  # the incumbent at the end of the run
    loop_s: float | None = None
    guards: str = ""  # how the guards fared on its accepted changes (sia.verdicts.guards_tally)
    transfers: tuple[tuple[str, str], ...] = ()  # (task, first -> final change on it), where `sia transfer` ran


def bootstrap_ci(diffs, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs`: resample the items with replacement
    `resamples` times and take the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the means."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.ndim != 1 or len(diffs) == 0:
        raise ValueError("bootstrap_ci needs a non-empty vector of per-item differences")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # in chunks, so a large test split stays small in memory
        count = min(1000, resamples - start)
        means[start:start + count] = diffs[rng.integers(0, len(diffs), size=(count, len(diffs)))].mean(axis=1)
    alpha = 1 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def mean_over_arms(scores: list[dict[str, float]]) -> dict[str, float]:
    """Item id -> its score averaged over `scores` (one dict per arm), on the items every arm has
    (the arms ran on the same test split, so normally all of them)."""
    common = set.intersection(*(set(s) for s in scores)) if scores else set()
    return {item: sum(s[item] for s in scores) / len(scores) for item in sorted(common)}


def paired_difference(a: dict[str, float], b: dict[str, float], confidence: float = 0.95,
                      resamples: int = 10_000, seed: int = 0) -> dict | None:
    """Mean of a - b over the items both have, with its bootstrap interval; None without common items."""
    items = sorted(set(a) & set(b))
    if not items:
        return None
    diffs = np.array([a[i] - b[i] for i in items], dtype=float)
    lo, hi = bootstrap_ci(diffs, confidence, resamples, seed)
    return {"delta": float(diffs.mean()), "lo": lo, "hi": hi, "n": len(items)}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _row(key: str, label: str, policy: str | None, arms: list[ArmResult],
         pick: Callable[[ArmResult], Incumbent | None]) -> tuple[dict, dict[str, float]] | None:
    scored = [(arm, pick(arm)) for arm in arms if pick(arm) is not None]
    if not scored:
        return None
    per_item = mean_over_arms([inc.test for _, inc in scored])
    by_seed: dict[int, list[float]] = {}
    for arm, inc in scored:
        by_seed.setdefault(arm.seed, []).append(_mean(inc.test.values()) if inc.test else float("nan"))
    row = {"key": key, "label": label, "policy": policy, "arms": [arm.arm for arm, _ in scored],
           "n_items": len(per_item), "test": _mean(per_item.values()) if per_item else None,
           "per_seed": {str(seed): _mean(values) for seed, values in sorted(by_seed.items())},
           "incumbents": {arm.arm: {"generation": inc.generation, "adapter": inc.adapter} for arm, inc in scored},
           "loop_s": None if key == "initial" else {arm.arm: arm.loop_s for arm, _ in scored}}
    return row, per_item


def compare_table(arms: list[ArmResult], policies: list[str] | None = None, confidence: float = 0.95,
                  resamples: int = 10_000, seed: int = 0) -> dict:
    """The table (rows and arms) of finished arms; `policies` orders the W+H rows (default: as the arms come)."""
    policies = policies or list(dict.fromkeys(arm.policy for arm in arms))
    stats = dict(confidence=confidence, resamples=resamples, seed=seed)
    rows: list[dict] = []
    initial = _row("initial", "initial", None, arms, lambda arm: arm.initial)
    h = _row("H", "best scaffold-only (H)", SCAFFOLD_ONLY, [a for a in arms if a.policy == SCAFFOLD_ONLY],
             lambda arm: arm.final)
    groups = [h] + [_row("W+H", f"best scaffold+weights (W+H): {policy}", policy,
                         [a for a in arms if a.policy == policy], lambda arm: arm.final)
                    for policy in policies if policy != SCAFFOLD_ONLY]
    if initial is not None:
        rows.append(dict(initial[0], vs_initial=None, vs_h=None))
    for group in groups:
        if group is None:
            continue
        row, per_item = group
        row["vs_initial"] = paired_difference(per_item, initial[1], **stats) if initial else None
        row["vs_h"] = paired_difference(per_item, h[1], **stats) if h is not None and row["key"] == "W+H" else None
        rows.append(row)
    return {"confidence": confidence, "resamples": resamples, "bootstrap_seed": seed, "rows": rows,
            "arms": [arm_summary(arm) for arm in arms]}


def arm_summary(arm: ArmResult) -> dict:
    test = lambda inc: _mean(inc.test.values()) if inc and inc.test else None  # noqa: E731
    return {"arm": arm.arm, "policy": arm.policy, "seed": arm.seed, "levers": list(arm.levers),
            "pulled_weights": "weights" in arm.levers, "initial_test": test(arm.initial),
            "final_test": test(arm.final), "final_generation": arm.final.generation if arm.final else None,
            "final_adapter": arm.final.adapter if arm.final else None, "loop_s": arm.loop_s, "guards": arm.guards,
            "transfers": dict(arm.transfers)}


# ---- text ----

def fmt(value, signed: bool = False) -> str:
    return "" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def fmt_difference(diff: dict | None) -> str:
    return "" if diff is None else f"{fmt(diff['delta'], True)} [{fmt(diff['lo'], True)}, {fmt(diff['hi'], True)}]"


def fmt_per_seed(values: dict | None, digits: int = 3, sep: str = " · ") -> str:
    if not values:
        return ""
    return sep.join(f"s{seed} " + ("?" if v is None else f"{v:.{digits}f}") for seed, v in values.items())


def loop_by_seed(row: dict, arms: list[dict]) -> dict | None:
    """A row's arms' loop seconds keyed by seed (W+H and H rows have one arm per seed)."""
    if not row.get("loop_s"):
        return None
    seed_of = {a["arm"]: a["seed"] for a in arms}
    return {str(seed_of.get(arm, arm)): s for arm, s in row["loop_s"].items()}


def describe(table: dict) -> str:
    """One line saying what the numbers are (under the table, in both renderings)."""
    n = sorted({row["n_items"] for row in table["rows"]})
    items = "/".join(str(x) for x in n) or "0"
    return (f"Scores on the private test split ({items} items); each row's final incumbent is the one chosen on the "
            f"selection split. Δ: mean paired difference per test item (scores averaged over a row's seeds first) with "
            f"its {table['confidence']:.0%} percentile bootstrap interval ({table['resamples']} item resamples). "
            f"Loop s: each arm's loop time. Guards: whether the task's guard metrics held on each change keep-best "
            f"accepted; transfer: first -> final incumbent on a related task (`sia transfer`), where it was scored.")


def table_markdown(table: dict) -> str:
    """table.md: a title, the rows, the arms and what the numbers mean."""
    spec = table.get("compare") or {}
    lines = [f"# Compare {spec.get('compare_id', '')}".rstrip(), ""]
    if spec:
        lines += [f"Task `{spec.get('task')}` · policies {', '.join(spec.get('policies', []))} · "
                  f"{spec.get('seeds')} seed(s) · {spec.get('generations')} generations"
                  + (f" · limit {spec['limit']}" if spec.get("limit") else ""), ""]
    pct = f"{table['confidence']:.0%}"
    lines += [f"| row | arms | test | per seed | Δ vs initial [{pct} CI] | Δ vs H [{pct} CI] | loop s per seed |",
              "|---|---|---|---|---|---|---|"]
    for row in table["rows"]:
        lines.append(f"| {row['label']} | {len(row['arms'])} | {fmt(row['test'])} | {fmt_per_seed(row['per_seed'])} | "
                     f"{fmt_difference(row['vs_initial'])} | {fmt_difference(row['vs_h'])} | "
                     f"{fmt_per_seed(loop_by_seed(row, table['arms']), 1)} |")
    lines += ["", "| arm | levers | final incumbent | initial test | final test | loop s | guards | transfer |",
              "|---|---|---|---|---|---|---|---|"]
    for arm in table["arms"]:
        lines.append(f"| {arm['arm']} | {', '.join(arm['levers'])} | {incumbent_text(arm)} | {fmt(arm['initial_test'])} | "
                     f"{fmt(arm['final_test'])} | {fmt_seconds(arm['loop_s'])} | {arm.get('guards', '')} | "
                     f"{transfer_text(arm)} |")
    return "\n".join(lines + ["", describe(table), ""])


def fmt_seconds(value) -> str:
    return "" if value is None else f"{value:.1f}"


def transfer_text(arm: dict) -> str:
    """'lawbench-mini-b: +0.010 [-0.05, +0.07] no clear change on transfer' per transfer task, or 'not scored'."""
    return "; ".join(f"{task}: {line}" for task, line in (arm.get("transfers") or {}).items()) or "not scored"


def incumbent_text(arm: dict) -> str:
    if arm["final_generation"] is None:
        return "none"
    return f"gen {arm['final_generation']} ({arm['final_adapter'] or 'base'})"

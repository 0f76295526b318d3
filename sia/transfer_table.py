"""The numbers of `sia transfer` and their reader: pure (per-item scores in, a JSON-able report
out; no component, no rich), so `sia show` and scripts can read a run's transfer checks cheaply.

A run's *incumbents* are its accepted generations in order (the first is the first incumbent,
the last the final one). A transfer check scores each on a related task the run never trained
or selected on (`nodes.transfer`) and reports every change between consecutive incumbents, and
first to final, as a paired difference per item with its percentile bootstrap interval
(`compare_table.paired_difference`), beside the same first-to-final difference on the run's own
private test split. The verdict reads only the interval: above zero "transferred", below zero
"loss on transfer", across zero "no clear change on transfer".

Files, in `runs/RUN/transfer/` (`sia transfer` writes them; see `read_transfers`):
`NAME.json` (the report), `NAME.md` (the same as a table) and `NAME_items.jsonl` (every
incumbent's per-item results on the transfer task, one JSON object a line).
"""

from __future__ import annotations

import re
from pathlib import Path

from sia.compare_table import fmt, fmt_difference, paired_difference
from sia.files import read_json

FOLDER = "transfer"


def file_stem(task_name: str) -> str:
    """A task name as a file name: other characters than letters, digits, '.', '_' and '-' become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", task_name).strip(".-") or "task"


def verdict(lo: float, hi: float, where: str = "transfer") -> str:
    """What an interval says: a gain ("transferred" on a transfer task), a loss, or no clear change."""
    if lo > 0:
        return "transferred" if where == "transfer" else f"gain on {where}"
    if hi < 0:
        return f"loss on {where}"
    return f"no clear change on {where}"


def change(a: dict[str, float], b: dict[str, float], frm: int, to: int, where: str = "transfer",
           **stats) -> dict | None:
    """{from, to, n, delta, ci: [lo, hi], verdict} of going from scores `a` to scores `b` (item id ->
    score): the mean of b - a over the items both have; None when they have none in common."""
    diff = paired_difference(b, a, **stats)
    if diff is None:
        return None
    return {"from": frm, "to": to, "n": diff["n"], "delta": diff["delta"], "ci": [diff["lo"], diff["hi"]],
            "verdict": verdict(diff["lo"], diff["hi"], where)}


def transfer_report(incumbents: list[dict], transfer_items: list[dict[str, float]],
                    own_items: list[dict[str, float]], *, confidence: float = 0.95, resamples: int = 10_000,
                    seed: int = 0) -> dict:
    """The report's numbers. `incumbents`: one dict per incumbent in order ({generation, lever,
    adapter, scaffold_sha, score, ...}); `transfer_items` and `own_items`: each incumbent's item id
    -> score on the transfer split and on the run's own test split. Returns {incumbents, changes,
    first_to_final, own_task, confidence, resamples, bootstrap_seed}; with one incumbent there is
    no change (changes [], first_to_final and own_task None); own_task is None too where run.db holds
    no test results of the first or final incumbent."""
    stats = dict(confidence=confidence, resamples=resamples, seed=seed)
    gens = [inc["generation"] for inc in incumbents]
    changes = [ch for k in range(1, len(incumbents))
               if (ch := change(transfer_items[k - 1], transfer_items[k], gens[k - 1], gens[k], **stats))]
    first_to_final = own = None
    if len(incumbents) > 1:
        first_to_final = change(transfer_items[0], transfer_items[-1], gens[0], gens[-1], **stats)
        own = change(own_items[0], own_items[-1], gens[0], gens[-1], where="the task", **stats)
    return {"incumbents": incumbents, "changes": changes, "first_to_final": first_to_final, "own_task": own,
            "confidence": confidence, "resamples": resamples, "bootstrap_seed": seed}


def read_transfers(run_root: Path) -> list[dict]:
    """Every transfer report of a run (`runs/RUN/transfer/*.json`), by task name; [] when there is
    none. Each is the dict `sia transfer` wrote (see the module docstring and `transfer_markdown`);
    an unreadable file is skipped (reports are written atomically, so that is a foreign file)."""
    folder = Path(run_root) / FOLDER
    reports = [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return [r for r in reports if isinstance(r.get("incumbents"), list) and r.get("task")]


# ---- text ----

def fmt_change(ch: dict | None) -> str:
    """"+0.250 [+0.100, +0.400]" of a change (empty when there is none)."""
    if not ch:
        return ""
    return fmt_difference({"delta": ch["delta"], "lo": ch["ci"][0], "hi": ch["ci"][1]})


def describe(report: dict) -> str:
    """One line saying what the numbers are (under the table, in every rendering)."""
    own = report.get("own_task") or {}
    return (f"Scores of the run's incumbents (accepted generations, scaffold and adapter together) on "
            f"{report['n']} {report['split']} items of `{report['task']}`, a task the run never trained or "
            f"selected on. Δ: mean paired difference per item with its {report['confidence']:.0%} percentile "
            f"bootstrap interval ({report['resamples']} item resamples); verdict from the interval alone. "
            f"Own task: the same first → final difference on the run's private test split"
            + (f" ({own['n']} items)." if own.get("n") else "."))


def transfer_markdown(report: dict) -> str:
    """NAME.md: the incumbents with their scores and changes, first → final beside the own task."""
    metric = f" ({report['metric']})" if report.get("metric") else ""
    pct = f"{report['confidence']:.0%}"
    lines = [f"# Transfer of run {report['run_id']} to {report['task']}", "",
             f"Run task `{report['run_task']}` · transfer task `{report['task']}`{metric} · split {report['split']} · "
             f"{report['n']} items" + (f" · limit {report['limit']}" if report.get("limit") else ""), "",
             f"| gen | lever | adapter | transfer score | Δ from previous [{pct} CI] | verdict | own test |",
             "|---|---|---|---|---|---|---|"]
    by_to = {ch["to"]: ch for ch in report["changes"]}
    for inc in report["incumbents"]:
        ch = by_to.get(inc["generation"])
        lines.append(f"| {inc['generation']} | {inc['lever']} | {inc['adapter'] or 'base'} | {fmt(inc['score'])} | "
                     f"{fmt_change(ch)} | {(ch or {}).get('verdict') or ''} | {fmt(inc.get('own_test'))} |")
    ftf, own = report.get("first_to_final"), report.get("own_task")
    if ftf:
        lines += ["", f"| first → final (gen {ftf['from']} → {ftf['to']}) | Δ [{pct} CI] | verdict |", "|---|---|---|",
                  f"| on transfer ({report['task']}) | {fmt_change(ftf)} | {ftf.get('verdict') or ''} |",
                  f"| on the task ({report['run_task']}, test) | {fmt_change(own) or 'no stored test results'} | "
                  f"{(own or {}).get('verdict') or ''} |"]
    else:
        lines += ["", "One incumbent only: no change to report."]
    return "\n".join(lines + ["", describe(report), ""])

"""Choosing a scaffold edit by experiment, for a feedback model that cannot write code:
successive halving over the applicable library edits, on the feedback split only.

The first round scores up to `search_candidates` candidates on a few feedback items; each round
keeps the better half and doubles the items, until one is left. The items are nested prefixes of
the feedback split interleaved by gold label, so every candidate of a round is scored on the same
items (paired), a survivor runs only on the items new to it, and a short prefix already spans
many labels. The plan is fixed before the first run and spends at most `search_items_budget`
item-evaluations. Selection and test items are never run here: the selection split decides
acceptance afterwards, under keep-best, as for any candidate.

The small LLM's menu pick (`nodes.edits.choose_edit`, close to chance for a 135M model) is a weak
prior: it always gets a first-round place and it wins ties; the library order (most often
helpful first) fills the other places and breaks the remaining ties. With an incumbent
(generation >= 2) each candidate is compared with the incumbent's cached feedback scores on the
same items; at generation 1 the unedited agent ("none") competes as a candidate instead. The best
candidate is returned even when it does not beat the incumbent; the record says so.

Each search is appended to the generation's `edit_search.json` (plan, every round's candidates,
items and per-item scores); `SearchResult.summary` is the readable account for improvement.md.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sia.files import read_json, write_json_atomic
from sia.graph.context import Services
from sia.graph.state import Candidate
from sia.nodes.common import emit, sha
from sia.nodes.edits import label_count
from sia.nodes.evaluation import evaluate
from sia.tasks.base import Row, Task
from sia.tasks.classification.edits import ScaffoldEdit, apply_edit, available_edits

NONE = "none"  # the candidate that applies no edit (generation 1 only)


@dataclass
class SearchResult:
    edit: ScaffoldEdit | None  # None: the unedited agent won (generation 1), or nothing applies
    summary: str  # markdown, for the generation's improvement.md
    note: str  # one line, for the candidate's rationale
    record: dict  # what was appended to edit_search.json


def schedule(width: int, first: int, n_items: int) -> list[tuple[int, int]]:
    """[(candidates, cumulative items)] per round: the width halves (rounded up) down to 2 and the
    items double from `first`; the last round's best wins. A round that has run on every item is
    the last one (ranking the same scores again would change nothing)."""
    rounds = [(width, min(first, n_items))]
    while rounds[-1][0] > 2 and rounds[-1][1] < n_items:
        rounds.append((math.ceil(rounds[-1][0] / 2), min(2 * rounds[-1][1], n_items)))
    return rounds


def cost(rounds: list[tuple[int, int]]) -> int:
    """Item-evaluations of a schedule: each round's candidates run on its new items only."""
    return sum(w * (m - prev) for (w, m), prev in zip(rounds, [0] + [m for _, m in rounds]))


def plan(width: int, n_items: int, budget: int) -> list[tuple[int, int]]:
    """The schedule within `budget`: the widest first round (up to `width`), then the most
    first-round items; [] when not even one candidate on one item fits (or nothing to run)."""
    for w in range(min(width, budget), 0, -1):
        for first in range(n_items, 0, -1):
            if cost(rounds := schedule(w, first, n_items)) <= budget:
                return rounds
    return []


def interleaved(rows: list[Row]) -> list[Row]:
    """The rows taken one per gold label in turn (labels in order of first appearance; rows
    without a gold answer here count as one label), so that every prefix is label-balanced."""
    by_label: dict[object, list[Row]] = defaultdict(list)
    for row in rows:
        by_label[row.get("label")].append(row)
    queues = list(by_label.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def _id(edit: ScaffoldEdit | None) -> str:
    return edit.id if edit else NONE


def _mean(scores: dict[str, float], ids: list[str]) -> float:
    return sum(scores[i] for i in ids) / len(ids) if ids else 0.0


def _versus(scores: dict[str, float], baseline: dict[str, float], ids: list[str]) -> dict | None:
    """The paired comparison on the items of `ids` that both have."""
    both = [i for i in ids if i in baseline and i in scores]
    if not both:
        return None
    diffs = [scores[i] - baseline[i] for i in both]
    return {"items": len(both), "delta": sum(diffs) / len(both), "baseline": _mean(baseline, both),
            "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs)}


def search_edit(svc: Services, task: Task, *, code: str, tried: list[str], pick: ScaffoldEdit | None,
                incumbent: Candidate | None, generation: int, lever: str, adapter: str | None,
                limit: int | None, pick_note: str = "") -> SearchResult:
    """Search the untried library edits of `code` (the incumbent's scaffold; the reference agent at
    generation 1, where `incumbent` is None and "none" competes); see the module docstring.
    `pick_note` says what became of the LLM's pick when it gave none (e.g. its reply did not parse)."""
    cfg = svc.config.scaffold
    gen_dir = svc.paths.gen(generation)
    edits = available_edits(code, tried, label_count(task))
    order: list[ScaffoldEdit | None] = ([pick] if pick else []) + ([None] if incumbent is None else []) \
        + [e for e in edits if pick is None or e.id != pick.id]
    rows = interleaved(task.splits(limit)["feedback"])
    rounds = plan(min(cfg.search_candidates, len(order)), len(rows), cfg.search_items_budget)
    ids = [r["id"] for r in rows]
    baseline: dict[str, float] = {}
    if incumbent is not None and rounds:  # cached since the incumbent was accepted: free
        baseline = {i.item_id: float(i.score) for i in
                    evaluate(svc, task, incumbent, ["feedback"], limit=limit)["feedback"].items}
    record = {"generation": generation, "pick": _id(pick) if pick or incumbent is None else None,
              "pick_note": pick_note, "baseline": "the unedited agent" if incumbent is None else "the incumbent",
              "budget": cfg.search_items_budget, "feedback_items": len(rows),
              "plan": rounds, "candidates": [_id(e) for e in order], "spent": 0,
              "incumbent": None if incumbent is None else {"scaffold_sha": incumbent.scaffold_sha, "scores": baseline},
              "rounds": []}
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    errors: dict[str, int] = defaultdict(int)
    rank = {_id(e): k for k, e in enumerate(order)}  # ties: the LLM's pick, then "none", then library order
    alive, done = order[: rounds[0][0]] if rounds else order[:1], 0
    for r, (width, m) in enumerate(rounds):
        alive, new = alive[:width], rows[done:m]
        emit({"event": "edit_search", "generation": generation, "round": r + 1,
              "candidates": [_id(e) for e in alive], "items": m})
        for e in alive if new else []:
            for item in _run(svc, task, e, code, generation, lever, adapter, limit, new, gen_dir / "search", r + 1):
                scores[_id(e)][item.item_id] = float(item.score)
                errors[_id(e)] += bool(item.error)
            record["spent"] += len(new)
        done, seen = m, ids[:m]
        alive = sorted(alive, key=lambda e: (-_mean(scores[_id(e)], seen), errors[_id(e)], rank[_id(e)]))
        keep = rounds[r + 1][0] if r + 1 < len(rounds) else 1
        against = baseline or scores[NONE]
        record["rounds"].append({"round": r + 1, "items": seen, "new_items": [x["id"] for x in new], "candidates": [
            {"id": _id(e), "mean": _mean(scores[_id(e)], seen), "errors": errors[_id(e)],
             "scores": {i: scores[_id(e)][i] for i in seen if i in scores[_id(e)]},
             "vs_incumbent": None if _id(e) == NONE else _versus(scores[_id(e)], against, seen), "kept": k < keep}
            for k, e in enumerate(alive)]})
    best = alive[0] if alive else None
    _verdict(record, _id(best) if order else None)
    _append(gen_dir / "edit_search.json", record)
    return SearchResult(best, _summary(record), record["note"], record)


def _run(svc: Services, task: Task, edit: ScaffoldEdit | None, code: str, generation: int, lever: str,
         adapter: str | None, limit: int | None, rows: list[Row], folder: Path, round_no: int):
    """One sandboxed agent run of a candidate scaffold on `rows` (feedback rows; never cached)."""
    text = apply_edit(code, edit) if edit else code
    name = edit.id if edit else NONE
    path = folder / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    probe = Candidate(generation=generation, lever=lever, scaffold_path=str(path), scaffold_sha=sha(text), adapter=adapter)
    return evaluate(svc, task, probe, ["feedback"], limit=limit, purpose="search", rows_override={"feedback": rows},
                    log_dir=folder / f"{name}_round{round_no}")["feedback"].items


def _verdict(record: dict, best_id: str | None) -> None:
    """The record's conclusion: what was chosen and whether it beat the incumbent (or, at generation
    1, the unedited agent) on the feedback items of its last round."""
    last = next((c for c in record["rounds"][-1]["candidates"] if c["id"] == best_id), None) if record["rounds"] else None
    versus = last and last["vs_incumbent"]
    record["chosen"] = best_id
    record["beats_incumbent"] = None if versus is None else versus["delta"] > 0
    what = record["baseline"]
    if best_id is None:
        record["verdict"] = "no candidate: no untried library edit applies"
    elif not record["rounds"]:
        record["verdict"] = (f"no search (budget {record['budget']}, {record['feedback_items']} feedback items): "
                             f"{best_id} untested")
    elif best_id == NONE:
        record["verdict"] = f"no edit beat the unedited agent on {len(record['rounds'][-1]['items'])} feedback items"
    elif versus is None:
        record["verdict"] = f"{best_id} is the best on {len(last['scores'])} feedback items ({what} not scored on them)"
    else:
        record["verdict"] = (f"{best_id} {'beats' if versus['delta'] > 0 else 'does not beat'} {what} on "
                             f"{versus['items']} feedback items: {last['mean']:.3f} vs {versus['baseline']:.3f} "
                             f"(better on {versus['wins']}, worse on {versus['losses']})"
                             + ("" if versus["delta"] > 0 else "; proposed anyway, the selection split decides"))
    width = len(record["rounds"][0]["candidates"]) if record["rounds"] else 0
    record["note"] = ("untested: no search" if not record["rounds"] else
                      f"search: best of {width} on {len(last['scores'])} feedback items, {last['mean']:.3f}"
                      + ("" if versus is None else f" vs {versus['baseline']:.3f}"
                         + ("" if versus["delta"] > 0 else ", not better")))


def _append(path: Path, record: dict) -> None:
    """Add one search to the generation's record (a rewrite retried after a failed smoke run
    searches again, without the failed edit)."""
    searches = read_json(path).get("searches", [])
    write_json_atomic(path, {"searches": searches + [record]})


def _summary(record: dict) -> str:
    pick = record["pick"] or "none"
    pick += f" ({record['pick_note']})" if record["pick_note"] else ""
    lines = ["## Edit search (feedback split only)", "",
             f"Successive halving, plan (candidates, items) per round: {record['plan'] or 'none'}; "
             f"{record['spent']} of {record['budget']} item-evaluations spent; {record['feedback_items']} feedback items.",
             f"The LLM's menu pick: {pick}; it always gets a first-round place and wins ties.", ""]
    if record["rounds"]:
        lines += [f"Each candidate against {record['baseline']} on the same items:", "",
                  "| round | items | candidate | score | vs baseline | errors | kept |", "|---|---|---|---|---|---|---|"]
        for rnd in record["rounds"]:
            for c in rnd["candidates"]:
                v = c["vs_incumbent"]
                vs = "" if v is None else f"{v['delta']:+.3f} (better on {v['wins']}, worse on {v['losses']})"
                lines.append(f"| {rnd['round']} | {len(rnd['items'])} | {c['id']} | {c['mean']:.3f} | {vs} | "
                             f"{c['errors']} | {'yes' if c['kept'] else 'no'} |")
        lines.append("")
    return "\n".join(lines + [f"Chosen: {record['verdict']}.", ""])

"""A verdict on every reported gain: for each accepted change of a run, whether the task's guard
metrics held when keep-best accepted it (`generations.guards`, see nodes/keep_best.py) and how it
transferred to the related tasks `sia transfer` scored it on (runs/RUN/transfer/*.json).

Pure: generation rows and transfer results in, rows and text out. The summary (summary.md),
`sia show` and `sia compare` all state it through these functions. Imports no component.
"""

from __future__ import annotations

from sia.transfer_table import fmt_change


def guards_state(text: str | None) -> str:
    """What `nodes.keep_best.Verdict.guards_summary` said, in one word: 'held', 'unchecked' (some
    guard could not be paired), 'blocked' (a guard kept out a metric win), 'failed' (a guard failed
    and the metric lost too), 'past bound' (a first candidate, accepted all the same) or 'none' (no
    guards ran: a task without guards, guards turned off, or a run from before guards)."""
    if not text:
        return "none"
    for prefix, state in (("BLOCKED", "blocked"), ("failed", "failed"), ("PAST BOUND", "past bound")):
        if text.startswith(prefix):
            return state
    return "unchecked" if "unchecked (" in text else "held"


def transfer_line(change: dict | None) -> str:
    """'+0.031 [-0.010, +0.072] no clear change on transfer' for one change of a transfer result."""
    return f"{fmt_change(change)} {change['verdict']}" if change else ""


def change_verdicts(generations: list[dict], transfers: list[dict]) -> list[dict]:
    """One row per accepted change (every accepted generation after the first): its selection gain
    over the incumbent it replaced, its guards, and per transfer task the change's transfer delta."""
    rows, previous = [], None
    for g in sorted(generations, key=lambda g: g["generation"]):
        if not g.get("accepted"):
            continue
        if previous is not None:
            gain = None if g.get("selection") is None or previous.get("selection") is None \
                else g["selection"] - previous["selection"]
            rows.append({"generation": g["generation"], "lever": g.get("lever"), "replaced": previous["generation"],
                         "selection_gain": gain, "test": g.get("test"), "guards": g.get("guards"),
                         "guards_state": guards_state(g.get("guards")),
                         "transfer": {t["task"]: next((c for c in t.get("changes", []) if c.get("to") == g["generation"]),
                                                      None) for t in transfers}})
        previous = g
    return rows


def guards_tally(rows: list[dict]) -> str:
    """How an arm's accepted changes (`change_verdicts` rows) fared: 'held on 2 of 2 changes', ..."""
    if not rows:
        return "no accepted change"
    states = [r["guards_state"] for r in rows]
    parts = [f"{name} on {states.count(name)}" for name in ("held", "unchecked", "none") if states.count(name)]
    return ", ".join(parts).replace("none on", "no guards on") + f" of {len(rows)} change{'s' * (len(rows) != 1)}"


def verdict_cells(generations: list[dict], transfers: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the verdict table as plain text, one row per accepted change: what
    summary.md, `sia show` and `sia report` each print in their own markup."""
    tasks = [t["task"] for t in transfers]
    header = ["gen", "lever", "replaced", "selection gain", "guards", *(f"transfer: {t}" for t in tasks)]
    rows = [[str(r["generation"]), str(r["lever"]), str(r["replaced"]),
             "" if r["selection_gain"] is None else f"{r['selection_gain']:+.3f}", r["guards"] or "no guards ran",
             *(transfer_line(r["transfer"].get(t)) or "not scored" for t in tasks)]
            for r in change_verdicts(generations, transfers)]
    return header, rows


def transfer_sentence(t: dict, name: str) -> str:
    """'Transfer to NAME (test split, 60 items): first -> final incumbent ...; on the run's own test
    split ....' for one transfer report; `name` is its task name in the caller's markup."""
    own = t.get("own_task")
    return (f"Transfer to {name} ({t.get('split', 'test')} split, {t.get('n')} items): first -> final incumbent "
            f"{transfer_line(t.get('first_to_final')) or 'no change (one incumbent)'}"
            + (f"; on the run's own test split {transfer_line(own)}" if own else "") + ".")


def verdict_markdown(generations: list[dict], transfers: list[dict]) -> str:
    """summary.md's section: a line per accepted change, then each transfer task's first -> final."""
    header, rows = verdict_cells(generations, transfers)
    if not rows and not transfers:
        return ""
    lines = ["", "## Verdict on each accepted change", ""]
    if rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    else:
        lines.append("No change was accepted after the first agent.")
    for t in transfers:
        lines += ["", transfer_sentence(t, f"`{t['task']}`")]
    return "\n".join(lines) + "\n"

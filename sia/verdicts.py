"""A verdict on every reported gain: for each accepted change of a run, whether the task's guard
metrics held when keep-best accepted it (`generations.guards`, see nodes/keep_best.py) and how it
transferred to the related tasks `sia transfer` scored it on (runs/RUN/transfer/*.json).

Pure: generation rows and transfer results in, rows and text out. The summary (summary.md),
`sia show` and `sia compare` all state it through these functions. Imports no component.
"""

from __future__ import annotations


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
    if not change:
        return ""
    lo, hi = change["ci"]
    return f"{change['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] {change['verdict']}"


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


def verdict_markdown(generations: list[dict], transfers: list[dict]) -> str:
    """summary.md's section: a line per accepted change, then each transfer task's first -> final."""
    rows = change_verdicts(generations, transfers)
    if not rows and not transfers:
        return ""
    lines = ["", "## Verdict on each accepted change", ""]
    if not rows:
        lines.append("No change was accepted after the first agent.")
    tasks = [t["task"] for t in transfers]
    if rows:
        header = ["gen", "lever", "replaced", "selection gain", "guards", *(f"transfer: {t}" for t in tasks)]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        gain = "" if r["selection_gain"] is None else f"{r['selection_gain']:+.3f}"
        cells = [str(r["generation"]), str(r["lever"]), str(r["replaced"]), gain, r["guards"] or "no guards ran",
                 *(transfer_line(r["transfer"].get(t)) or "not scored" for t in tasks)]
        lines.append("| " + " | ".join(cells) + " |")
    for t in transfers:
        final = t.get("first_to_final")
        own = t.get("own_task")
        lines += ["", f"Transfer to `{t['task']}` ({t.get('split', 'test')} split, {t.get('n')} items): first -> final "
                      f"incumbent {transfer_line(final) or 'no change (one incumbent)'}"
                  + (f"; on the run's own test split {transfer_line(own)}" if own else "") + "."]
    return "\n".join(lines) + "\n"

"""The offline Feedback-Agent's diagnosis: statistics of the incumbent's feedback-split results.

A model that cannot write code (the embedded 135M) writes no useful free-text diagnosis, so
the diagnosis is computed instead: accuracy, the most frequent confusions (gold -> predicted),
the labels with the most errors, items without an answer, with an error, or with an answer
outside the allowed labels, and whether the agent collapses onto one answer. Pure functions of
`ItemResult`s; only feedback items may be passed in (their gold labels are shown to agents
anyway). Predictions and errors come from the agent, so they are shown only quoted and cut
short (`nodes.common.quoted`), never as free text."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sia.nodes.common import quoted
from sia.records import ItemResult

NO_ANSWER = None  # the "predicted" side of a confusion whose item has no prediction


@dataclass(frozen=True)
class LabelErrors:
    """How the items of one gold label went."""

    label: str
    n: int
    wrong: int


@dataclass(frozen=True)
class Diagnosis:
    n: int  # items
    mean_score: float  # accuracy for 0/1 scores
    correct: int  # items scoring 1 (or more)
    partial: int  # items scoring strictly between 0 and 1 (tasks with graded scores)
    confusions: list[tuple[str, str | None, int]]  # (gold, predicted or NO_ANSWER, count), most frequent first
    labels: list[LabelErrors]  # gold labels with at least one wrong item, worst first
    errors: int  # items whose evaluation recorded an error (the agent crashed, timed out, wrote no output...)
    no_answer: int  # items without a prediction (None or blank)
    invalid: int | None  # predictions outside the allowed labels (None: allowed labels unknown)
    top_prediction: tuple[str, int] | None  # the most frequent prediction and its count
    top_gold_share: float  # the most frequent gold label's share (what a constant answer could at best get)
    ungraded: int  # items without a gold answer here (scored by the task's own evaluator)
    example_error: str | None  # one item error, as the agent left it (quote before showing)


def _blank(prediction: str | None) -> bool:
    return prediction is None or not str(prediction).strip()


def diagnose(items: list[ItemResult], allowed: list[str] | None = None) -> Diagnosis:
    """Statistics of one evaluation's items. `allowed`: the task's labels, if it has a fixed set
    (used only to count answers outside it; the list itself is never shown, since it may hold
    labels that only the private test split uses)."""
    n = len(items)
    wrong = [i for i in items if i.score < 1]
    graded = [i for i in items if i.gold is not None]
    confusions = Counter((i.gold, NO_ANSWER if _blank(i.prediction) else str(i.prediction))
                         for i in wrong if i.gold is not None)
    per_gold, wrong_gold = Counter(i.gold for i in graded), Counter(i.gold for i in wrong if i.gold is not None)
    labels = sorted((LabelErrors(g, per_gold[g], wrong_gold[g]) for g in wrong_gold),
                    key=lambda e: (-e.wrong, -e.wrong / e.n, e.label))
    answers = Counter(str(i.prediction) for i in items if not _blank(i.prediction))
    allowed_set = set(allowed) if allowed else None
    return Diagnosis(
        n=n, mean_score=sum(i.score for i in items) / n if n else 0.0,
        correct=sum(1 for i in items if i.score >= 1), partial=sum(1 for i in items if 0 < i.score < 1),
        confusions=[(g, p, c) for (g, p), c in sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0][0], str(kv[0][1])))],
        labels=labels, errors=sum(1 for i in items if i.error), no_answer=sum(1 for i in items if _blank(i.prediction)),
        invalid=None if allowed_set is None else sum(1 for i in items if not _blank(i.prediction)
                                                     and str(i.prediction) not in allowed_set),
        top_prediction=answers.most_common(1)[0] if answers else None,
        top_gold_share=max(per_gold.values()) / len(graded) if graded else 0.0,
        ungraded=n - len(graded), example_error=next((i.error for i in items if i.error), None))


def collapsed(d: Diagnosis) -> bool:
    """The agent gives (nearly) one answer to everything, although the gold labels vary: the
    failure of a small model that is not shown what the labels look like."""
    if d.top_prediction is None or d.n < 3 or d.ungraded == d.n:
        return False
    return d.top_prediction[1] >= 0.8 * d.n and d.top_gold_share < 0.8


def _pred(p: str | None) -> str:
    return "(no answer)" if p is NO_ANSWER else quoted(p, 40)


def _cell(text: str) -> str:
    """Text in a markdown table cell (a "|" would split the cell)."""
    return text.replace("|", "\\|")


def summary(d: Diagnosis, confusions: int = 3, labels: int = 3) -> str:
    """The diagnosis in one paragraph: `state.diagnosis`, what the lever and edit prompts read."""
    if d.n == 0:
        return "no feedback results to diagnose (the incumbent has not been scored on the feedback split)"
    parts = [f"feedback score {d.mean_score:.3f} on {d.n} items ({d.correct} right"
             + (f", {d.partial} partly right" if d.partial else "") + ")"]
    if collapsed(d):
        parts.append(f"collapsed: answers {_pred(d.top_prediction[0])} for {d.top_prediction[1]} of {d.n} items "
                     f"although no gold label covers more than {d.top_gold_share:.0%}")
    if d.confusions:
        parts.append("most frequent confusions (gold -> predicted): "
                     + ", ".join(f"{g} -> {_pred(p)} x{c}" for g, p, c in d.confusions[:confusions]))
    if d.labels:
        parts.append("worst labels: " + ", ".join(f"{e.label} {e.wrong}/{e.n} wrong" for e in d.labels[:labels]))
    if d.no_answer or d.errors or d.invalid:
        parts.append(f"{d.no_answer} without an answer, {d.errors} with an error"
                     + (f", {d.invalid} outside the allowed labels" if d.invalid else "")
                     + (f" (e.g. {quoted(d.example_error, 80)})" if d.example_error else ""))
    if d.ungraded:
        parts.append(f"{d.ungraded} items scored by the task's own evaluator (no gold answer here)")
    return "; ".join(parts) + "."


def markdown(d: Diagnosis, rows: int = 10) -> str:
    """The statistics in detail for feedback.md (below the summary): counts, then the confusion
    and per-label tables."""
    top = f"{_pred(d.top_prediction[0])} (items: {d.top_prediction[1]})" if d.top_prediction else "none"
    out = [f"- items: {d.n}; right: {d.correct}; partly right: {d.partial}; mean score: {d.mean_score:.3f}",
           f"- without an answer: {d.no_answer}; with an error: {d.errors}; outside the allowed labels: "
           f"{'unknown' if d.invalid is None else d.invalid}; without a gold answer here: {d.ungraded}",
           f"- most frequent answer: {top}; most frequent gold label's share: {d.top_gold_share:.0%}"]
    if d.example_error:
        out.append(f"- an error: {quoted(d.example_error, 300)}")
    if d.confusions:
        out += ["", "| gold | predicted | items |", "|---|---|---|"]
        out += [f"| {_cell(g)} | {_cell(_pred(p))} | {c} |" for g, p, c in d.confusions[:rows]]
        if len(d.confusions) > rows:
            out.append(f"\n({len(d.confusions) - rows} rarer confusions not shown)")
    if d.labels:
        out += ["", "| gold label | items | wrong |", "|---|---|---|"]
        out += [f"| {_cell(e.label)} | {e.n} | {e.wrong} |" for e in d.labels[:rows]]
    return "\n".join(out) + "\n"

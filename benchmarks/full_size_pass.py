"""One selection pass and one LoRA epoch at a task's full size, before and after the issue-16
speed work, measured side by side in one run (LawBench by default: 573 selection items).

    .venv/bin/python benchmarks/full_size_pass.py [--task lawbench] [--scaffold NAME=EDIT,EDIT ...]

Each scaffold variant (the task's reference agent with library edits applied) runs in its own
throwaway run (no variant reuses another's cached completions), in the real sandbox through the
real gateway: one pass over the whole selection split (timed), then one over the feedback split
so the gateway records the calls a weights step trains on; then one LoRA epoch over the SFT rows
built from those recorded calls (`finetune.records.sft_rows`, as the finetune subgraph builds
them), with the run config's training settings.

The default variants: "before" is the first agent a user got on lawbench before this work (the
small model's menu pick, two retrieved examples, every case through the model); "after" is the
classifier tool (a TF-IDF linear SVM fitted on the training pool shortlists 3 labels and alone
answers its most confident half). Accuracy is printed for context only: nothing is chosen here.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sia.config import FinetuneConfig, RunConfig
from sia.finetune.records import sft_rows
from sia.finetune.trainer import SubprocessTrainer
from sia.graph.state import Candidate
from sia.nodes.common import sha
from sia.nodes.evaluation import evaluate
from sia.nodes.services import Services
from sia.tasks.classification.edits import LIBRARY, apply_edit
from sia.tasks.registry import resolve_task

DEFAULT_VARIANTS = ["before=retrieved-shots-2", "after=classifier-labels-3,classifier-decides-half"]


def scaffold(task, edits: list[str]) -> str:
    by_id = {e.id: e for e in LIBRARY}
    code = task.reference_agent.read_text()
    for edit_id in edits:
        code = apply_edit(code, by_id[edit_id])
    return code


def selection_pass(config: RunConfig, task, edits: list[str], run_id: str) -> dict:
    svc = Services.build(config, run_id)
    try:
        code = scaffold(task, edits)
        path = svc.paths.gen(1) / "target_agent.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        candidate = Candidate(generation=1, lever="meta", scaffold_path=str(path), scaffold_sha=sha(code), adapter=None)
        started = time.perf_counter()
        score = evaluate(svc, task, candidate, ["selection"])["selection"]
        wall = time.perf_counter() - started
        calls = sqlite3.connect(svc.paths.run_db).execute("select count(*) from model_calls").fetchone()[0]
        evaluate(svc, task, candidate, ["feedback"])
        rows, _ = sft_rows(svc.db, run_id, candidate.scaffold_sha)
        return {"wall_s": wall, "items": score.n, "calls": calls, "accuracy": score.score, "rows": rows}
    finally:
        if svc._gateway is not None:  # each variant's gateway (and loaded model) goes with it
            svc._gateway.stop()


def one_epoch(config: RunConfig, rows: list[dict], out: Path) -> dict:
    from sia.gateway.model_store import safetensors_dir

    out.mkdir(parents=True)
    dataset = out / "dataset.jsonl"
    dataset.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    settings = FinetuneConfig(**(config.finetune.model_dump() | {"epochs": 1, "max_steps": -1, "save_steps": 10_000,
                                                                  "min_examples": 1}))
    return SubprocessTrainer().train(dataset, safetensors_dir(), out / "adapter", settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lawbench")
    parser.add_argument("--scaffold", action="append", help="NAME=edit,edit (repeatable; default: before and after)")
    args = parser.parse_args()
    task = resolve_task(args.task)
    variants = [(v.split("=", 1)[0], [e for e in v.split("=", 1)[1].split(",") if e])
                for v in (args.scaffold or DEFAULT_VARIANTS)]
    console = Console()
    results = {}
    with tempfile.TemporaryDirectory(prefix="full-size-") as tmp:
        config = RunConfig.from_env().model_copy(update={"runs_dir": Path(tmp)})
        for name, edits in variants:
            with console.status(f"{name}: selection pass, then the feedback split ..."):
                r = selection_pass(config, task, edits, name)
            with console.status(f"{name}: one LoRA epoch over {len(r['rows'])} rows ..."):
                summary = one_epoch(config, r["rows"], Path(tmp) / f"epoch-{name}")
            r.update(epoch_s=summary["wall_s"], steps=summary.get("steps"), n_rows=len(r.pop("rows")),
                     tokens=summary.get("tokens"), backend=summary.get("backend"))
            results[name] = r
            console.print(f"{name}: selection {r['wall_s']:.0f} s ({r['calls']} calls), epoch {r['epoch_s']:.0f} s")
    table = Table(title=f"{task.name}: one selection pass ({results[variants[0][0]]['items']} items) and one LoRA "
                        f"epoch ({config.finetune.precision}, batch {config.finetune.batch_size})")
    for column in ("scaffold", "edits", "selection s", "model calls", "s / item", "accuracy (context)",
                   "epoch rows", "epoch tokens", "epoch s", "backend"):
        table.add_column(column)
    for name, edits in variants:
        r = results[name]
        table.add_row(name, ",".join(edits), f"{r['wall_s']:.0f}", str(r["calls"]), f"{r['wall_s'] / r['items']:.2f}",
                      f"{r['accuracy']:.3f}", str(r["n_rows"]), str(r["tokens"]), f"{r['epoch_s']:.0f}", str(r["backend"]))
    console.print(table)
    first = variants[0][0]
    for name, _ in variants[1:]:
        console.print(f"{first} / {name}: selection pass [bold]{results[first]['wall_s'] / results[name]['wall_s']:.2f}x[/], "
                      f"LoRA epoch [bold]{results[first]['epoch_s'] / results[name]['epoch_s']:.2f}x[/]")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

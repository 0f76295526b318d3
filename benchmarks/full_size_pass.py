"""One selection pass and one LoRA epoch at a task's full size, for scaffold and training
variants measured side by side in one run (LawBench by default: 573 selection items).

    .venv/bin/python benchmarks/full_size_pass.py [--task lawbench] [--rounds 1]
        [--scaffold NAME=EDIT,EDIT ...] [--epoch-rows FILE.jsonl] [--precisions fp32,bf16]

Selection pass: each scaffold variant (the task's reference agent with library edits applied)
runs on the whole selection split in the real sandbox through the real gateway, in its own
throwaway run (so no variant reuses another's cached completions), and the table shows wall
seconds, model calls, seconds per item and accuracy. The default variants are the scaffold a
user got before the issue-16 work (what the Meta-Agent picked then: two retrieved examples,
every call through the model) and the classifier-tool scaffold (the classifier shortlists 3
labels and alone answers its most confident half). With --rounds > 1 the variants alternate.

LoRA epoch: one epoch over a real SFT dataset (`--epoch-rows`, e.g. a run's
adapters/gen_N/dataset.jsonl; default: the rows built from the first variant's recorded calls
on the feedback split) at each of `--precisions`, same backend, in their own processes.
Selection accuracy printed here is for timing context only: nothing is chosen from it.
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

DEFAULT_VARIANTS = ["before=retrieved-shots-2", "classifier-tool=classifier-labels-3,classifier-decides-half"]


def scaffold(task, edits: list[str]) -> str:
    by_id = {e.id: e for e in LIBRARY}
    code = task.reference_agent.read_text()
    for edit_id in edits:
        code = apply_edit(code, by_id[edit_id])
    return code


def selection_pass(config: RunConfig, task, name: str, edits: list[str], run_id: str) -> dict:
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
        rows = None
        if name == "first":
            evaluate(svc, task, candidate, ["feedback"])
            rows, _ = sft_rows(svc.db, run_id, candidate.scaffold_sha)
        return {"wall_s": wall, "items": score.n, "calls": calls, "accuracy": score.score, "rows": rows}
    finally:
        if svc._gateway is not None:  # each variant's gateway (and loaded model) goes with it
            svc._gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lawbench")
    parser.add_argument("--scaffold", action="append", help="NAME=edit,edit (repeatable; default: before and after)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epoch-rows", type=Path, help="an SFT dataset.jsonl for the LoRA epoch")
    parser.add_argument("--precisions", default="fp32,bf16", help="training precisions to time an epoch at")
    parser.add_argument("--skip-epoch", action="store_true")
    args = parser.parse_args()
    task = resolve_task(args.task)
    variants = [(v.split("=", 1)[0], [e for e in v.split("=", 1)[1].split(",") if e])
                for v in (args.scaffold or DEFAULT_VARIANTS)]
    console = Console()
    results: dict[str, list[dict]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory(prefix="full-size-") as tmp:
        config = RunConfig.from_env().model_copy(update={"runs_dir": Path(tmp)})
        rows = None
        for round_no in range(args.rounds):
            for i, (name, edits) in enumerate(variants if round_no % 2 == 0 else variants[::-1]):
                with console.status(f"round {round_no + 1}: selection pass of {name} ..."):
                    first = round_no == 0 and i == 0 and not args.epoch_rows and not args.skip_epoch
                    r = selection_pass(config, task, "first" if first else name, edits, f"{name}-{round_no}")
                rows = r.pop("rows") or rows
                results[name].append(r)
                console.print(f"{name}: {r['wall_s']:.0f} s, {r['calls']} calls, {r['items']} items")
        table = Table(title=f"{task.name}: one selection pass ({results[variants[0][0]][0]['items']} items)")
        for column in ("scaffold", "edits", "wall s", "model calls", "s / item", "accuracy (context only)"):
            table.add_column(column)
        for name, edits in variants:
            for r in results[name]:
                table.add_row(name, ",".join(edits), f"{r['wall_s']:.0f}", str(r["calls"]),
                              f"{r['wall_s'] / r['items']:.2f}", f"{r['accuracy']:.3f}")
        console.print(table)
        base = results[variants[0][0]][0]["wall_s"]
        for name, _ in variants[1:]:
            console.print(f"{variants[0][0]} / {name} selection-pass time: [bold]{base / results[name][0]['wall_s']:.2f}x[/]")
        if args.skip_epoch:
            return
        dataset = args.epoch_rows
        if dataset is None:
            dataset = Path(tmp) / "rows.jsonl"
            dataset.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows or []))
        from sia.gateway.model_store import safetensors_dir

        epoch = Table(title=f"one LoRA epoch over {sum(1 for _ in dataset.open())} rows of {dataset.name}")
        for column in ("precision", "backend", "steps", "wall s", "train s / step"):
            epoch.add_column(column)
        for precision in args.precisions.split(","):
            settings = FinetuneConfig(**(config.finetune.model_dump() | {"epochs": 1, "precision": precision,
                                                                          "save_steps": 10_000}))
            with console.status(f"one epoch at {precision} ..."):
                summary = SubprocessTrainer().train(dataset, safetensors_dir(), Path(tmp) / f"epoch-{precision}", settings)
            steps = summary.get("step_times_s") or []
            epoch.add_row(precision, summary["backend"], str(summary.get("steps")), f"{summary['wall_s']:.0f}",
                          f"{sum(steps) / max(1, len(steps)):.2f}")
        console.print(epoch)


if __name__ == "__main__":
    main()

"""The fine-tuning subgraph's nodes: build_dataset -> train_adapter.

The incumbent scaffold first runs on a slice of the training pool (rollouts), so its calls
are recorded by the gateway; the dataset joins the incumbent scaffold's recorded calls
(by default; `train_on`) with their rewards. A LoRA adapter is trained in a subprocess
(resumable) and handed back as a candidate: the incumbent scaffold served with the adapter.
The task node then scores it and keep-best decides, as for any candidate."""

from __future__ import annotations

import json

from langgraph.runtime import Runtime

from sia.files import write_json_atomic, write_text_atomic
from sia.finetune.records import sft_rows
from sia.finetune.trainer import TrainingFailed
from sia.graph.context import RunContext, Services
from sia.graph.state import Candidate, FinetuneState
from sia.nodes.common import emit, lever_failed
from sia.nodes.evaluation import append_timing, evaluate
from sia.nodes.services import services


def _failed(state: FinetuneState, svc: Services, note: str) -> dict:
    return lever_failed(svc, state, "weights", state.adapter_dir, note, f"finetune: {note}")


def build_dataset(state: FinetuneState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    gen = state.generation + 1
    emit({"event": "generation", "generation": gen, "lever": "weights", "rationale": "LoRA on rewarded records"})
    if svc.config.rollout_items:
        rollout = state.incumbent.model_copy(update={"generation": gen})
        evaluate(svc, svc.task(state.task), rollout, ["rollout"], limit=state.limit, purpose="rollout",
                 log_dir=svc.paths.adapter(gen), emit=emit)
    only_sha = state.incumbent.scaffold_sha if svc.config.train_on == "incumbent_scaffold" else None
    rows, stats = sft_rows(svc.db, state.run_id, only_sha)
    out = svc.paths.adapter(gen)
    write_text_atomic(out / "dataset.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_json_atomic(out / "dataset_stats.json", stats)
    emit({"event": "dataset", "generation": gen, "rows": len(rows), **stats})
    if len(rows) < svc.config.finetune.min_examples:
        return _failed(state, svc, f"only {len(rows)} training rows (need {svc.config.finetune.min_examples})")
    return {"dataset_path": str(out / "dataset.jsonl"), "dataset_rows": len(rows)}


def train_adapter(state: FinetuneState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    gen = state.generation + 1
    out = svc.paths.adapter(gen)
    try:
        summary = svc.trainer.train(out / "dataset.jsonl", svc.base_model(), out, svc.config.finetune,
                                    on_event=lambda e: emit({"generation": gen, **e}))
    except TrainingFailed as exc:
        return _failed(state, svc, f"training failed: {exc.reason} (log: {exc.log_path})")
    append_timing(svc, {"generation": gen, "purpose": "training", "items": {"rows": state.dataset_rows},
                        "wall_s": summary.get("wall_s")})
    version = str(out.relative_to(svc.paths.root))
    svc.db.save_adapter({"run_id": state.run_id, "version": version, "generation": gen, "path": version,
                         "examples": state.dataset_rows, "train_loss": summary.get("train_loss"), "selection": None,
                         "promoted": 0, "backend": summary.get("backend")})
    inc = state.incumbent
    candidate = Candidate(generation=gen, lever="weights", scaffold_path=inc.scaffold_path,
                          scaffold_sha=inc.scaffold_sha, adapter=version,
                          rationale=f"LoRA on {state.dataset_rows} rows, final loss "
                                    f"{summary.get('train_loss', float('nan')):.3f}")
    return {"adapter_dir": version, "train_summary": summary, "candidate": candidate, "generation": gen}

"""The fine-tuning subgraph's nodes: build_dataset -> train_adapter -> score_adapter -> promote_adapter.

The incumbent scaffold first runs on a slice of the training pool (rollouts), so its calls
are recorded by the gateway; the dataset joins the incumbent scaffold's recorded calls
(by default; `train_on`) with their rewards. A LoRA
adapter is trained in a subprocess (resumable), scored on the selection split, and promoted
only if it beats the incumbent there."""

from __future__ import annotations

import json

from sia.checkpoints.paths import write_json_atomic, write_text_atomic
from sia.finetune.records import sft_rows
from sia.finetune.trainer import TrainingFailed
from sia.graph.context import services
from sia.graph.state import Candidate, FinetuneState
from sia.nodes.common import emit, lever_failed, load_task
from sia.nodes.evaluation import evaluate
from sia.nodes.task import judge


def _failed(state: FinetuneState, svc, note: str, selection: float | None = None, error: bool = True) -> dict:
    return lever_failed(svc, state, "weights", state.adapter_dir, note, f"finetune: {note}" if error else None, selection)


def build_dataset(state: FinetuneState, runtime) -> dict:
    svc = services(runtime, state.run_id)
    gen = state.generation + 1
    emit({"event": "generation", "generation": gen, "lever": "weights", "rationale": "LoRA on rewarded records"})
    task = load_task(state)
    if svc.config.rollout_items:
        rollout = state.incumbent.model_copy(update={"generation": gen})
        evaluate(svc, task, rollout, ["rollout"], limit=state.limit, purpose="rollout",
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


def train_adapter(state: FinetuneState, runtime) -> dict:
    svc = services(runtime, state.run_id)
    out = svc.paths.adapter(state.generation + 1)
    try:
        summary = svc.trainer.train(out / "dataset.jsonl", svc.base_model(), out, svc.config.finetune,
                                    on_event=lambda e: emit({"generation": state.generation + 1, **e}))
    except TrainingFailed as exc:
        return _failed(state, svc, f"training failed: {exc.reason} (log: {exc.log_path})")
    return {"adapter_dir": str(out.relative_to(svc.paths.root)), "train_summary": summary}


def score_adapter(state: FinetuneState, runtime) -> dict:
    svc = services(runtime, state.run_id)
    inc = state.incumbent
    cand = Candidate(generation=state.generation + 1, lever="weights", scaffold_path=inc.scaffold_path,
                     scaffold_sha=inc.scaffold_sha, adapter=state.adapter_dir,
                     rationale=f"LoRA on {state.dataset_rows} rows, final loss "
                               f"{(state.train_summary or {}).get('train_loss', float('nan')):.3f}")
    sel = evaluate(svc, load_task(state), cand, ["selection"], limit=state.limit,
                   log_dir=svc.paths.gen(cand.generation), emit=emit)["selection"]
    return {"candidate": cand, "adapter_selection": sel.score}


def promote_adapter(state: FinetuneState, runtime) -> dict:
    """Promote the adapter (make it the candidate the task node records) only if it wins on selection."""
    svc = services(runtime, state.run_id)
    task = load_task(state)
    items = evaluate(svc, task, state.candidate, ["selection"], limit=state.limit)["selection"].items
    verdict = judge(svc, task, state, items)
    promoted = verdict.accepted
    summary = state.train_summary or {}
    svc.db.save_adapter({"run_id": state.run_id, "version": state.adapter_dir, "generation": state.generation + 1,
                         "path": state.adapter_dir, "examples": state.dataset_rows,
                         "train_loss": summary.get("train_loss"), "selection": state.adapter_selection,
                         "promoted": int(promoted), "backend": summary.get("backend")})
    if not promoted:
        return _failed(state, svc, f"adapter not promoted: selection {state.adapter_selection:.3f}, "
                                   f"incumbent {state.incumbent_selection:.3f}: {verdict.reason}",
                       selection=state.adapter_selection, error=False)
    return {"generation": state.generation + 1}

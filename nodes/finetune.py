"""The fine-tuning subgraph's nodes: build_dataset -> train_adapter.

The incumbent scaffold first runs on a slice of the training pool (rollouts), so its calls
are recorded by the gateway; the dataset joins the incumbent scaffold's recorded calls
(by default; `train_on`) with their rewards (SFT), or lists their prompts with how to score a
completion (GRPO/entropic: the trainer samples and the task scores). The method is the one the
Feedback-Agent named, else `finetune.method` (`auto`: SFT where items have gold answers). A LoRA adapter is trained in a subprocess
(resumable) and handed back as a candidate: the incumbent scaffold served with the adapter.
The task node then scores it and keep-best decides, as for any candidate."""

from __future__ import annotations

import json
from pathlib import Path

from langgraph.runtime import Runtime

from sia.files import append_jsonl, write_json_atomic, write_text_atomic
from sia.finetune.grpo import REWARD_TASK_NAME
from sia.finetune.records import resolve_method, reward_rows, sft_rows
from sia.finetune.rewards import REWARDS_NAME, read_rewards
from sia.finetune.trainer import TrainingFailed
from sia.graph.context import RunContext, Services
from sia.graph.state import Candidate, FinetuneState
from sia.nodes.common import emit, lever_failed
from sia.nodes.evaluation import append_timing, evaluate
from sia.nodes.services import services


def _reward_note(summary: dict) -> str:
    rewards = summary.get("reward_history") or []
    return f", mean sampled reward {rewards[0]:.3f} -> {rewards[-1]:.3f}" if rewards else ""


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
    prompts, prompt_stats = reward_rows(svc.db, state.run_id, only_sha)
    wanted = state.next_method or svc.config.finetune.method
    method, why = resolve_method(wanted, prompt_stats["label"], prompt_stats["task"])
    if state.next_method:
        why = f"named by the Feedback-Agent ({state.next_method})"
    out = svc.paths.adapter(gen)
    if method == "sft":
        rows, stats = sft_rows(svc.db, state.run_id, only_sha)
    else:
        rows, stats = prompts, prompt_stats
        if prompt_stats["task"]:  # the training process scores these through the task, in a sandbox
            write_json_atomic(out / REWARD_TASK_NAME, {"task": state.task, "python": svc.python,
                                                       "limits": svc.config.sandbox.model_dump(),
                                                       "record_dir": str(svc.paths.sandboxes)})
    stats = {"method": method, "method_why": why, **stats}
    write_text_atomic(out / "dataset.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_json_atomic(out / "dataset_stats.json", stats)
    emit({"event": "dataset", "generation": gen, "rows": len(rows), **stats})
    if len(rows) < svc.config.finetune.min_examples:
        return _failed(state, svc, f"only {len(rows)} {method} training rows (need "
                                   f"{svc.config.finetune.min_examples})")
    return {"dataset_path": str(out / "dataset.jsonl"), "dataset_rows": len(rows), "method": method}


def progress(adapter_dir: Path, event: dict) -> None:
    """A training event to the live view and to the adapter's progress.jsonl (read by `sia web`)."""
    emit(event)
    append_jsonl(adapter_dir / "progress.jsonl", event)


def train_adapter(state: FinetuneState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    gen = state.generation + 1
    out = svc.paths.adapter(gen)
    method = state.method or "sft"
    config = svc.config.finetune.model_copy(update={"method": method})
    try:
        summary = svc.trainer.train(out / "dataset.jsonl", svc.base_model(), out, config,
                                    on_event=lambda e: progress(out, {"generation": gen, **e}))
    except TrainingFailed as exc:
        return _failed(state, svc, f"training failed: {exc.reason} (log: {exc.log_path})")
    finally:
        if method != "sft":  # what the model was rewarded for, also when training failed midway
            svc.db.save_rewards(state.run_id, gen, read_rewards(out / REWARDS_NAME))
    append_timing(svc, {"generation": gen, "purpose": "training", "items": {"rows": state.dataset_rows},
                        "method": method, "wall_s": summary.get("wall_s")})
    version = str(out.relative_to(svc.paths.root))
    svc.db.save_adapter({"run_id": state.run_id, "version": version, "generation": gen, "path": version,
                         "examples": state.dataset_rows, "train_loss": summary.get("train_loss"), "selection": None,
                         "promoted": 0, "backend": summary.get("backend")})
    inc = state.incumbent
    candidate = Candidate(generation=gen, lever="weights", scaffold_path=inc.scaffold_path,
                          scaffold_sha=inc.scaffold_sha, adapter=version,
                          rationale=f"LoRA on {state.dataset_rows} rows ({method}), final loss "
                                    f"{summary.get('train_loss') or float('nan'):.3f}" + _reward_note(summary))
    return {"adapter_dir": version, "train_summary": summary, "candidate": candidate, "generation": gen}

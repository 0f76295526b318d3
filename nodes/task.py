"""task: the Task Agent runs the candidate on the selection split; keep-best decides on that
score alone whether it replaces the incumbent. An accepted candidate then runs on the feedback
split (whose per-item results the Feedback-Agent reads) and the private test split (stored
and reported, never used to decide, never put in a prompt). A rejected candidate is scored on
those too only with `report_rejected`, since neither score could change anything."""

from __future__ import annotations

from checkpoints.paths import write_json_atomic, write_text_atomic
from graph.context import services
from graph.state import GenerationResult, SIAState
from nodes.common import elapsed, emit, load_task
from nodes.evaluation import evaluate, items_jsonl


def accepts(candidate_selection: float, incumbent_selection: float | None, min_improvement: float) -> bool:
    """Keep-best: the first candidate is accepted; later ones must beat the incumbent."""
    return incumbent_selection is None or candidate_selection > incumbent_selection + min_improvement


def task(state: SIAState, runtime) -> dict:
    svc = services(runtime, state.run_id)
    if state.pending_result is not None:  # the lever produced no candidate; record why
        svc.db.save_generation({"run_id": state.run_id, **state.pending_result.model_dump()})
        return {"history": [state.pending_result], "pending_result": None, "candidate": None}
    cand = state.candidate
    task_ = load_task(state)
    gen_dir = svc.paths.gen(cand.generation)
    scores = evaluate(svc, task_, cand, ["selection"], limit=state.limit, log_dir=gen_dir, emit=emit)
    sel = scores["selection"].score
    accepted = accepts(sel, state.incumbent_selection, svc.config.min_improvement)
    if accepted or svc.config.report_rejected:
        scores.update(evaluate(svc, task_, cand, ["feedback", "test"], limit=state.limit, log_dir=gen_dir, emit=emit))
    fb, test = (scores[s].score if s in scores else None for s in ("feedback", "test"))
    result = GenerationResult(generation=cand.generation, lever=cand.lever, adapter=cand.adapter, feedback=fb,
                              selection=sel, test=test, accepted=accepted, wall_s=elapsed(svc, state),
                              note=cand.rationale[:120])
    svc.db.save_generation({"run_id": state.run_id, **result.model_dump(), "scaffold_sha": cand.scaffold_sha})
    write_json_atomic(gen_dir / "results.json", {
        "generation": cand.generation, "lever": cand.lever, "adapter": cand.adapter, "accepted": accepted,
        "feedback": fb, "selection": sel, "test": test, "incumbent_selection_before": state.incumbent_selection,
        "n": {s: scores[s].n for s in scores}, "wall_s": result.wall_s})
    write_text_atomic(gen_dir / "items.jsonl", items_jsonl([i for s in scores.values() for i in s.items]))
    emit({"event": "scored", **result.model_dump()})
    update = {"history": [result], "candidate": None}
    if accepted:
        update.update(incumbent=cand, incumbent_selection=sel)
    return update

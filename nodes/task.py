"""task: the Task Agent runs the candidate on the selection split; keep-best decides on that
score alone, once, whether it replaces the incumbent. An accepted candidate then runs on the
feedback split (whose per-item results the Feedback-Agent reads) and the private test split
(stored and reported, never used to decide, never put in a prompt). A rejected candidate is
scored on those too only with `report_rejected`, since neither score could change anything.
A candidate from either lever comes here: a scaffold rewrite, or an adapter on the incumbent."""

from __future__ import annotations

from langgraph.runtime import Runtime

from sia.files import write_json_atomic, write_text_atomic
from sia.graph.context import RunContext, Services
from sia.graph.state import Candidate, GenerationResult, SIAState
from sia.nodes.budget import with_spend
from sia.nodes.common import elapsed, emit
from sia.nodes.evaluation import ProtectedFilesChanged, evaluate, items_jsonl
from sia.nodes.keep_best import Verdict, item_scores, keep_best
from sia.nodes.services import services
from sia.records import ItemResult
from sia.tasks.base import Task, guard_values_of


def judge(svc: Services, task_: Task, state: SIAState, selection_items: list[ItemResult]) -> Verdict:
    """Keep-best against the incumbent's per-item selection scores (cached, so usually free), its
    guard metrics included."""
    incumbent_items = None
    if state.incumbent is not None:
        incumbent_items = evaluate(svc, task_, state.incumbent, ["selection"], limit=state.limit)["selection"].items
    cand, inc = guard_values_of(task_, selection_items), guard_values_of(task_, incumbent_items or [])
    guards = [(g, cand.get(g.name, {}), inc.get(g.name, {})) for g in getattr(task_, "guards", ())]
    return keep_best(item_scores(selection_items), None if incumbent_items is None else item_scores(incumbent_items),
                     svc.config.keep_best, guards)


def task(state: SIAState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    cand = state.candidate
    task_ = svc.task(state.task)
    gen_dir = svc.paths.gen(cand.generation)
    try:
        scores = evaluate(svc, task_, cand, ["selection"], limit=state.limit, log_dir=gen_dir, emit=emit)
        verdict = judge(svc, task_, state, scores["selection"].items)
        if verdict.accepted or svc.config.report_rejected:
            # An agent whose model calls belong to the whole run, not to one item (TriMul writes one
            # program), names some item of the run: feedback gets its own run, so that item is a
            # feedback item and the calls can become training data (finetune.records).
            runs = [["feedback", "test"]] if getattr(task_, "per_item_calls", True) else [["feedback"], ["test"]]
            for splits in runs:
                scores.update(evaluate(svc, task_, cand, splits, limit=state.limit, log_dir=gen_dir, emit=emit))
    except ProtectedFilesChanged as exc:
        return _flag(svc, state, cand, str(exc))
    sel, accepted = scores["selection"].score, verdict.accepted
    fb, test = (scores[s].score if s in scores else None for s in ("feedback", "test"))
    result = GenerationResult(generation=cand.generation, lever=cand.lever, adapter=cand.adapter, feedback=fb,
                              selection=sel, test=test, accepted=accepted, p_value=verdict.p_value,
                              guards=verdict.guards_summary(), wall_s=elapsed(svc, state),
                              note=f"{cand.rationale[:100]} [{verdict.reason}]")
    result = with_spend(result, svc.paths.run_db, svc.config, state.run_id)
    svc.db.save_generation({"run_id": state.run_id, **result.model_dump(), "scaffold_sha": cand.scaffold_sha})
    if cand.lever == "weights":  # the adapter's row (written when it was trained) gets its verdict
        svc.db.save_adapter({"run_id": state.run_id, "version": cand.adapter, "selection": sel,
                             "promoted": int(accepted)})
    write_json_atomic(gen_dir / "results.json", {
        "generation": cand.generation, "lever": cand.lever, "adapter": cand.adapter, "accepted": accepted,
        "feedback": fb, "selection": sel, "test": test, "incumbent_selection_before": state.incumbent_selection,
        "keep_best": {"reason": verdict.reason, "p_value": verdict.p_value, "delta": verdict.delta,
                      "guards": verdict.guard_rows(), "blocked_by": verdict.blocked_by},
        "n": {s: scores[s].n for s in scores}, "wall_s": result.wall_s, "tokens": result.tokens, "usd": result.usd})
    write_text_atomic(gen_dir / "items.jsonl", items_jsonl([i for s in scores.values() for i in s.items]))
    emit({"event": "scored", **result.model_dump()})
    update = {"history": [result], "candidate": None}
    if accepted:
        update.update(incumbent=cand, incumbent_selection=sel)
    svc.release_adapter(retired_adapter(state.incumbent, cand, accepted))
    return update


def retired_adapter(incumbent: Candidate | None, cand: Candidate, accepted: bool) -> str | None:
    """The adapter no longer served after this verdict: a rejected candidate's own, or the one an
    accepted candidate replaced (None: the base model, or the adapter is still the incumbent's)."""
    kept = cand.adapter if accepted else (incumbent.adapter if incumbent else None)
    gone = (incumbent.adapter if incumbent else None) if accepted else cand.adapter
    return None if gone == kept else gone


def _flag(svc: Services, state: SIAState, cand: Candidate, why: str) -> dict:
    """Reject the generation and flag the run (evaluate() has recorded the flag in run.db)."""
    result = GenerationResult(generation=cand.generation, lever=cand.lever, adapter=cand.adapter, feedback=None,
                              selection=None, test=None, accepted=False, wall_s=elapsed(svc, state), note=f"FLAGGED: {why}")
    result = with_spend(result, svc.paths.run_db, svc.config, state.run_id)
    svc.db.save_generation({"run_id": state.run_id, **result.model_dump(), "scaffold_sha": cand.scaffold_sha})
    write_json_atomic(svc.paths.gen(cand.generation) / "results.json", {
        "generation": cand.generation, "accepted": False, "flagged": why})
    emit({"event": "scored", **result.model_dump()})
    return {"history": [result], "candidate": None, "flagged": why, "errors": state.errors + [f"gen {cand.generation} {why}"]}

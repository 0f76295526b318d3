"""The scaffold-rewrite subgraph's nodes: propose -> validate -> (retry | accept | give up).

A code-writing LLM proposes a whole new target_agent.py; otherwise one typed edit from the
library is chosen by an edit search on the feedback split (nodes/edit_search.py), the LLM's
menu pick being one of its inputs. Validation is a syntax check, then a smoke run on a few
feedback items in the sandbox; a failure goes back to propose with the error, at most
`max_attempts` times."""

from __future__ import annotations

import ast

from langgraph.runtime import Runtime

from sia.graph.context import RunContext
from sia.graph.state import Candidate, ScaffoldRewriteState
from sia.llm import LLMOutputError
from sia.nodes import prompts
from sia.nodes.common import emit, failures_text, lever_failed, quoted, read, sha, write_scaffold
from sia.nodes.edit_search import search_edit
from sia.nodes.edits import choose_edit, label_count
from sia.nodes.evaluation import evaluate
from sia.nodes.services import services
from sia.tasks.classification.edits import ScaffoldEdit, apply_edit


def propose_scaffold(state: ScaffoldRewriteState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    attempts = state.attempts + 1
    if attempts > svc.config.scaffold.max_attempts:
        return {"give_up": True, "attempts": attempts}
    code = read(state.incumbent.scaffold_path)
    llm = svc.llm("feedback")
    tried = state.tried + ([state.proposal_edit] if state.proposal_edit else [])
    if llm.can_write_code:
        items = svc.db.cached_items(state.run_id, state.incumbent.scaffold_sha, state.incumbent.adapter, "feedback")
        last = f"Your previous proposal failed validation: {state.last_error}\n\n" if state.last_error else ""
        try:
            proposal = llm.code(prompts.REWRITE_SYSTEM, prompts.REWRITE_USER.format(
                description=svc.task(state.task).description, diagnosis=state.diagnosis,
                failures=failures_text(items), last_error=last, code=code))
        except LLMOutputError as exc:
            return {"proposal": None, "attempts": attempts, "last_error": str(exc)}
        return {"proposal": proposal, "proposal_edit": None, "attempts": attempts,
                "proposal_rationale": f"full rewrite by the Feedback-Agent; diagnosis: {state.diagnosis}"}
    gen, errors, pick, pick_note = state.generation + 1, list(state.errors), None, ""
    try:  # the small model's pick is one input of the search; without it the search still runs
        pick = choose_edit(llm, state.task, code, tried, state.diagnosis, allow_none=False,
                           n_classes=label_count(svc.task(state.task)))
    except LLMOutputError as exc:
        pick_note = f"its reply did not parse: {exc}"
        errors.append(f"gen {gen} edit pick: {exc}")
    found = search_edit(svc, svc.task(state.task), code=code, tried=tried, pick=pick, incumbent=state.incumbent,
                        generation=gen, lever="scaffold", adapter=state.incumbent.adapter, limit=state.limit,
                        pick_note=pick_note)
    edit: ScaffoldEdit | None = found.edit
    if edit is None:
        return {"give_up": True, "attempts": attempts, "errors": errors,
                "last_error": "no untried library edit applies to this scaffold"}
    emit({"event": "proposal", "generation": gen, "edit": edit.id})
    return {"proposal": apply_edit(code, edit), "proposal_edit": edit.id, "attempts": attempts, "tried": tried,
            "errors": errors, "proposal_rationale": f"library edit {edit.id} ({found.note}): {edit.description}",
            "proposal_search": found.summary}


def validate_scaffold(state: ScaffoldRewriteState, runtime: Runtime[RunContext]) -> dict:
    if state.proposal is None:
        return {"validated": False}
    try:
        ast.parse(state.proposal)
    except SyntaxError as exc:
        return {"validated": False, "last_error": f"target_agent.py line {exc.lineno}: SyntaxError: {exc.msg}"}
    svc = services(runtime, state)
    task = svc.task(state.task)
    gen = state.generation + 1
    path = svc.paths.gen(gen) / f"proposal_{state.attempts}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(state.proposal, encoding="utf-8")
    probe = Candidate(generation=gen, lever="scaffold", scaffold_path=str(path), scaffold_sha=sha(state.proposal),
                      adapter=state.incumbent.adapter)
    smoke_rows = task.splits(state.limit)["feedback"][: svc.config.scaffold.smoke_items]
    result = evaluate(svc, task, probe, ["feedback"], purpose="smoke", rows_override={"feedback": smoke_rows},
                      log_dir=svc.paths.gen(gen) / f"smoke_{state.attempts}")["feedback"]
    if errors := sorted({i.error for i in result.items if i.error}):
        return {"validated": False, "last_error": smoke_failure(errors, len(result.items))}
    return {"validated": True, "last_error": None}


def smoke_failure(errors: list[str], n_items: int, shown: int = 3, chars: int = 200) -> str:
    """What the next proposal's prompt says about a failed smoke run. The item errors carry the
    agent's stderr and whatever its output made the evaluator print: each is quoted and cut to
    `chars` characters, and at most `shown` of the distinct ones are given."""
    more = f" and {len(errors) - shown} more" if len(errors) > shown else ""
    return (f"smoke run failed ({n_items} items; errors quoted, cut to {chars} characters): "
            + "; ".join(quoted(e, chars) for e in errors[:shown]) + more)


def accept_scaffold(state: ScaffoldRewriteState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    gen = state.generation + 1
    parent = read(state.incumbent.scaffold_path)
    improvement = (f"# Generation {gen} (scaffold rewrite)\n\nDiagnosis: {state.diagnosis}\n\n"
                   f"Change: {state.proposal_rationale}\n\nAttempts: {state.attempts}\n"
                   + (f"\n{state.proposal_search}" if state.proposal_edit else ""))
    cand = write_scaffold(svc, gen, state.proposal, "scaffold", state.proposal_rationale, state.incumbent.adapter,
                          parent, improvement)
    tried = state.tried + ([state.proposal_edit] if state.proposal_edit and state.proposal_edit not in state.tried else [])
    emit({"event": "generation", "generation": gen, "lever": "scaffold", "rationale": state.proposal_rationale})
    return {"generation": gen, "candidate": cand, "tried": tried}


def give_up_scaffold(state: ScaffoldRewriteState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    reason = state.last_error or "no valid proposal"
    return lever_failed(svc, state, "scaffold", state.incumbent.adapter,
                        f"rewrite failed after {state.attempts - 1} attempts: {reason}", f"scaffold_rewrite: {reason}")

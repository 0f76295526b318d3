"""meta: the Meta-Agent writes generation 1's target_agent.py.

A code-writing LLM writes it from the task description and the reference agent (kept only
if it parses; otherwise the reference is used and the error recorded). An LLM that cannot
write code picks at most one edit from the library to apply to the reference agent; with
`scaffold.search_generation_1` that pick is one input of an edit search on the feedback split
(nodes/edit_search.py) in which the unedited reference competes too."""

from __future__ import annotations

import ast

from langgraph.runtime import Runtime

from sia.graph.context import RunContext, Services
from sia.graph.state import SIAState
from sia.llm import LLMOutputError, RoleLLM
from sia.nodes import prompts
from sia.nodes.common import emit, read, write_scaffold
from sia.nodes.edit_search import search_edit
from sia.nodes.edits import choose_edit, label_count
from sia.nodes.services import services
from sia.tasks.base import Task
from sia.tasks.classification.edits import apply_edit


def meta(state: SIAState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    started = svc.clock()
    task = svc.task(state.task)
    reference = read(task.reference_agent)
    llm = svc.llm("meta")
    errors, tried = list(state.errors), list(state.tried)
    code, rationale, summary = reference, "reference agent", ""
    try:
        if llm.can_write_code:
            proposal = llm.code(prompts.META_SYSTEM, prompts.META_USER.format(description=task.description, reference=reference))
            ast.parse(proposal)
            code, rationale = proposal, "written by the Meta-Agent"
        elif not svc.config.scaffold.search_generation_1:
            edit = choose_edit(llm, task.name, reference, tried, "no runs yet", allow_none=True,
                               n_classes=label_count(task))
            if edit is not None:
                code, rationale = apply_edit(reference, edit), f"reference agent + edit {edit.id}: {edit.description}"
                tried.append(edit.id)
        else:
            code, rationale, summary = _searched(svc, task, llm, reference, tried, errors, state.limit)
    except (LLMOutputError, SyntaxError, ValueError) as exc:
        errors.append(f"gen 1 meta: {type(exc).__name__}: {exc}; using the reference agent")
        code, rationale = reference, "reference agent"
    candidate = write_scaffold(svc, 1, code, "meta", rationale, None, reference,
                               f"# Generation 1 (Meta-Agent)\n\n{rationale}\n" + (f"\n{summary}" if summary else ""))
    emit({"event": "generation", "generation": 1, "lever": "meta", "rationale": rationale})
    return {"generation": 1, "candidate": candidate, "tried": tried, "errors": errors, "lever_started": started}


def _searched(svc: Services, task: Task, llm: RoleLLM, reference: str, tried: list[str], errors: list[str],
              limit: int | None) -> tuple[str, str, str]:
    """(code, rationale, search summary) of generation 1 chosen by the edit search, the LLM's pick
    ("none" included) being one input; appends to `tried` and `errors` in place."""
    pick, pick_note = None, ""
    try:
        pick = choose_edit(llm, task.name, reference, tried, "no runs yet", allow_none=True,
                               n_classes=label_count(task))
    except LLMOutputError as exc:  # the search runs without the pick
        pick_note = f"its reply did not parse: {exc}"
        errors.append(f"gen 1 edit pick: {exc}")
    found = search_edit(svc, task, code=reference, tried=tried, pick=pick, incumbent=None, generation=1,
                        lever="meta", adapter=None, limit=limit, pick_note=pick_note)
    if found.edit is None:
        return reference, f"reference agent ({found.note})", found.summary
    tried.append(found.edit.id)
    return (apply_edit(reference, found.edit),
            f"reference agent + edit {found.edit.id} ({found.note}): {found.edit.description}", found.summary)

"""meta: the Meta-Agent writes generation 1's target_agent.py.

A code-writing LLM writes it from the task description and the reference agent (kept only
if it parses; otherwise the reference is used and the error recorded). An LLM that cannot
write code picks at most one edit from the library to apply to the reference agent."""

from __future__ import annotations

import ast

from langgraph.runtime import Runtime

from sia.graph.context import RunContext
from sia.graph.state import SIAState
from sia.llm import LLMOutputError
from sia.nodes import prompts
from sia.nodes.common import emit, read, write_scaffold
from sia.nodes.edits import choose_edit
from sia.nodes.services import services
from sia.tasks.classification.edits import apply_edit


def meta(state: SIAState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    started = svc.clock()
    task = svc.task(state.task)
    reference = read(task.reference_agent)
    llm = svc.llm("meta")
    errors, tried = list(state.errors), list(state.tried)
    code, rationale = reference, "reference agent"
    try:
        if llm.can_write_code:
            proposal = llm.code(prompts.META_SYSTEM, prompts.META_USER.format(description=task.description, reference=reference))
            ast.parse(proposal)
            code, rationale = proposal, "written by the Meta-Agent"
        else:
            edit = choose_edit(llm, task.name, reference, tried, "no runs yet", allow_none=True)
            if edit is not None:
                code, rationale = apply_edit(reference, edit), f"reference agent + edit {edit.id}: {edit.description}"
                tried.append(edit.id)
    except (LLMOutputError, SyntaxError, ValueError) as exc:
        errors.append(f"gen 1 meta: {type(exc).__name__}: {exc}; using the reference agent")
    candidate = write_scaffold(svc, 1, code, "meta", rationale, None, reference,
                               f"# Generation 1 (Meta-Agent)\n\n{rationale}\n")
    emit({"event": "generation", "generation": 1, "lever": "meta", "rationale": rationale})
    return {"generation": 1, "candidate": candidate, "tried": tried, "errors": errors, "lever_started": started}

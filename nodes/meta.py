"""meta: the Meta-Agent writes generation 1's target_agent.py.

A code-writing LLM writes it from the task description and the reference agent (kept only
if it parses; otherwise the reference is used and the error recorded). An LLM that cannot
write code picks at most one edit from the library to apply to the reference agent."""

from __future__ import annotations

import ast
from typing import Literal

from pydantic import BaseModel, create_model

from sia.graph.context import services
from sia.graph.state import SIAState
from sia.nodes import prompts
from sia.nodes.common import emit, load_task, read, write_scaffold
from sia.nodes.edits import apply_edit, available_edits
from sia.nodes.llm import LLMOutputError


MENU_SIZE = 3


def choose_edit(llm, task_name: str, code: str, tried: list[str], diagnosis: str, allow_none: bool):
    """Ask the LLM to pick one of the first MENU_SIZE untried library edits (the library is
    ordered by how often an edit helps), schema-constrained to the menu."""
    edits = available_edits(code, tried)[:MENU_SIZE]
    if not edits:
        return None
    ids = [e.id for e in edits] + (["none"] if allow_none else [])
    schema: type[BaseModel] = create_model("EditChoice", edit=(Literal[tuple(ids)], ...))
    menu = "\n".join(f"{e.id}: {e.description}" for e in edits)
    choice = llm.structured(prompts.EDIT_SYSTEM, prompts.EDIT_USER.format(task=task_name, diagnosis=diagnosis, menu=menu), schema)
    return next((e for e in edits if e.id == choice.edit), None)


def meta(state: SIAState, runtime) -> dict:
    svc = services(runtime, state.run_id)
    started = svc.clock()
    task = load_task(state)
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

"""Choosing a scaffold edit with an LLM that cannot write code: a short menu of the untried
library edits that would change this scaffold, and a reply constrained to the menu. Used by the
Meta-Agent (generation 1, may choose none) and by the scaffold rewrite (must choose one)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, create_model

from sia.llm import RoleLLM
from sia.nodes import prompts
from sia.tasks.classification.edits import ScaffoldEdit, available_edits

MENU_SIZE = 3


def label_count(task) -> int | None:
    """How many labels a task has (None when it declares none): some edits only fit small label sets."""
    return len(getattr(task, "classes", None) or []) or None


def choose_edit(llm: RoleLLM, task_name: str, code: str, tried: list[str], diagnosis: str,
                allow_none: bool, n_classes: int | None = None) -> ScaffoldEdit | None:
    """Ask the LLM to pick one of the first MENU_SIZE untried library edits (the library is
    ordered by how often an edit helps), schema-constrained to the menu; None when no edit
    applies, or when `allow_none` and the LLM chose none."""
    edits = available_edits(code, tried, n_classes)[:MENU_SIZE]
    if not edits:
        return None
    ids = [e.id for e in edits] + (["none"] if allow_none else [])
    schema: type[BaseModel] = create_model("EditChoice", edit=(Literal[tuple(ids)], ...))
    menu = "\n".join(f"{e.id}: {e.description}" for e in edits)
    choice = llm.structured(prompts.EDIT_SYSTEM, prompts.EDIT_USER.format(task=task_name, diagnosis=diagnosis, menu=menu), schema)
    return next((e for e in edits if e.id == choice.edit), None)

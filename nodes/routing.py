"""Pure routing functions for the conditional edges."""

from __future__ import annotations

from typing import Literal

from sia.graph.state import FinetuneState, ScaffoldRewriteState, SIAState


def after_feedback(state: SIAState) -> Literal["scaffold_rewrite", "finetune", "finish"]:
    return {"scaffold": "scaffold_rewrite", "weights": "finetune"}.get(state.next_lever, "finish")


def after_lever(state: SIAState) -> Literal["task", "record_failure"]:
    """A lever subgraph hands back a candidate to score, or a failure to record."""
    return "record_failure" if state.pending_result is not None else "task"


def after_propose(state: ScaffoldRewriteState) -> Literal["validate_scaffold", "give_up_scaffold"]:
    return "give_up_scaffold" if state.give_up else "validate_scaffold"


def after_validate(state: ScaffoldRewriteState) -> Literal["accept_scaffold", "propose_scaffold"]:
    return "accept_scaffold" if state.validated else "propose_scaffold"


def after_build_dataset(state: FinetuneState) -> Literal["continue", "stop"]:
    return "stop" if state.pending_result is not None else "continue"

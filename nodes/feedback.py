"""feedback: the Feedback-Agent reads the incumbent's feedback-split failures and the history,
writes a diagnosis and proposes a lever; the run's policy makes the final choice."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from langgraph.runtime import Runtime

from sia.files import write_text_atomic
from sia.graph.context import RunContext
from sia.graph.state import SIAState
from sia.llm import LLMOutputError
from sia.nodes import prompts
from sia.nodes.common import emit, failures_text
from sia.nodes.policies import choose_lever
from sia.nodes.services import services


class FeedbackDecision(BaseModel):
    diagnosis: str = Field(description="What goes wrong and why, in a few sentences.", pattern=r"^[^\x00-\x1f]*$")
    lever: Literal["scaffold", "weights", "stop"]


def _history_text(state: SIAState) -> str:
    return "\n".join(f"- gen {h.generation}: {h.lever}, feedback {h.feedback}, selection {h.selection}, "
                     f"{'accepted' if h.accepted else 'rejected'}" for h in state.history) or "(none)"


def feedback(state: SIAState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    errors = list(state.errors)
    incumbent = state.incumbent
    items = svc.db.cached_items(state.run_id, incumbent.scaffold_sha, incumbent.adapter, "feedback") if incumbent else []
    failures = failures_text(items)
    llm_lever, diagnosis = None, ""
    if state.generation < state.max_generations and not state.flagged:
        try:
            decision = svc.llm("feedback").structured(prompts.FEEDBACK_SYSTEM, prompts.FEEDBACK_USER.format(
                task=state.task, weights_available=svc.config.weights_available, history=_history_text(state),
                failures=failures), FeedbackDecision)
            llm_lever, diagnosis = decision.lever, decision.diagnosis
        except LLMOutputError as exc:
            errors.append(f"gen {state.generation} feedback: {exc}")
            diagnosis = "(the Feedback-Agent's reply did not parse)"
    lever, why = choose_lever(state, llm_lever, svc.config.weights_available)
    if state.flagged:
        lever, why = "stop", f"run flagged: {state.flagged}"
    write_text_atomic(svc.paths.gen(state.generation) / "feedback.md",
                      f"# Feedback after generation {state.generation}\n\nDiagnosis: {diagnosis}\n\n"
                      f"Feedback-Agent's lever: {llm_lever}\nChosen lever: {lever} ({why})\n\nFailures:\n{failures}\n")
    emit({"event": "lever", "generation": state.generation, "lever": lever, "why": why})
    return {"diagnosis": diagnosis, "next_lever": lever, "errors": errors, "lever_started": svc.clock()}

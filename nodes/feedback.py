"""feedback: the Feedback-Agent reads the incumbent's feedback-split results and the history,
writes a diagnosis and proposes a lever; the run's policy makes the final choice.

A model that writes code reasons in free text: it writes the diagnosis and picks the lever. A
model that cannot (the embedded 135M, whose free text is noise) only picks the lever; the
diagnosis is computed from the feedback items' statistics (`nodes.diagnosis`) and shown to it.
Either way feedback.md holds the statistics, for the humans reading the run."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from langgraph.runtime import Runtime

from sia.files import write_text_atomic
from sia.graph.context import RunContext
from sia.graph.state import SIAState
from sia.llm import LLMOutputError
from sia.nodes import diagnosis as stats
from sia.nodes import prompts
from sia.nodes.budget import budget_gate
from sia.nodes.common import emit, failures_text
from sia.nodes.policies import choose_lever, will_continue
from sia.nodes.services import services


class FeedbackDecision(BaseModel):
    diagnosis: str = Field(description="What goes wrong and why, in a few sentences.", pattern=r"^[^\x00-\x1f]*$")
    lever: Literal["scaffold", "weights", "stop"]
    method: Literal["sft", "grpo", "entropic"] | None = Field(
        None, description="With lever 'weights': the training method (None: the run's finetune.method).")


class LeverChoice(BaseModel):
    """What a model that cannot write code is asked for: the lever only."""

    lever: Literal["scaffold", "weights", "stop"]


def _history_text(state: SIAState) -> str:
    return "\n".join(f"- gen {h.generation}: {h.lever}, feedback {h.feedback}, selection {h.selection}, "
                     f"{'accepted' if h.accepted else 'rejected'}" for h in state.history) or "(none)"


def feedback(state: SIAState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    if will_continue(state):  # first, before any side effect: a resumed pause re-runs this node
        # The invocation's config, not the services': a process that resumes a run it already
        # drove (a compare, Studio) keeps its services, but a resume may raise the budget.
        budget_gate(svc.paths, getattr(runtime.context, "config", None) or svc.config, state.history, state.generation)
    errors = list(state.errors)
    incumbent = state.incumbent
    items = svc.db.cached_items(state.run_id, incumbent.scaffold_sha, incumbent.adapter, "feedback") if incumbent else []
    failures = failures_text(items)
    computed = stats.diagnose(items, getattr(svc.task(state.task), "classes", None))
    asks = state.generation < state.max_generations and not state.flagged
    llm = svc.llm("feedback") if asks else None  # built only when asked: a remote role may lack its key
    writes_code = llm.can_write_code if llm else svc.config.feedback.can_write_code
    llm_lever, diagnosis, parsed = None, "" if writes_code else stats.summary(computed), True
    llm_method = None
    if llm is not None:
        history = _history_text(state)
        try:
            if writes_code:
                decision = llm.structured(prompts.FEEDBACK_SYSTEM, prompts.FEEDBACK_USER.format(
                    task=state.task, weights_available=svc.config.weights_available, history=history,
                    failures=failures), FeedbackDecision)
                llm_lever, diagnosis, llm_method = decision.lever, decision.diagnosis, decision.method
            else:
                llm_lever = llm.structured(prompts.LEVER_SYSTEM, prompts.LEVER_USER.format(
                    task=state.task, weights_available=svc.config.weights_available, history=history,
                    diagnosis=diagnosis), LeverChoice).lever
        except LLMOutputError as exc:
            errors.append(f"gen {state.generation} feedback: {exc}")
            parsed = False
            if writes_code:
                diagnosis = "(the Feedback-Agent's reply did not parse)"
    lever, why = choose_lever(state, llm_lever, svc.config.weights_available)
    source = "the Feedback-Agent's" if writes_code else "computed from the feedback items; the model writes no code"
    computed_line = f"Computed: {stats.summary(computed)}\n\n" if writes_code else ""  # offline it is the diagnosis
    write_text_atomic(svc.paths.gen(state.generation) / "feedback.md",
                      f"# Feedback after generation {state.generation}\n\nDiagnosis ({source}): {diagnosis}\n\n"
                      f"Feedback-Agent's lever: {llm_lever if parsed else '(its reply did not parse)'}\n"
                      f"Chosen lever: {lever} ({why})\n"
                      f"Training method named by the Feedback-Agent: {llm_method or '(none)'}\n\n"
                      f"## Feedback-split statistics\n\n{computed_line}{stats.markdown(computed)}\n"
                      f"Failures:\n{failures}\n")
    emit({"event": "lever", "generation": state.generation, "lever": lever, "why": why})
    return {"diagnosis": diagnosis, "next_lever": lever, "next_method": llm_method if lever == "weights" else None,
            "errors": errors, "lever_started": svc.clock()}

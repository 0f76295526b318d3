"""Lever policies: which lever the next generation pulls. Chosen per run by name."""

from __future__ import annotations

from typing import Callable

from sia.graph.state import Lever, SIAState


def _alternate(state: SIAState, llm_lever: Lever | None) -> Lever:
    return "weights" if state.history and state.history[-1].lever == "scaffold" else "scaffold"


def _llm(state: SIAState, llm_lever: Lever | None) -> Lever:
    """The Feedback-Agent's own choice (the paper's method); alternate if it gave none."""
    return llm_lever or _alternate(state, None)


def _plateau(state: SIAState, llm_lever: Lever | None) -> Lever:
    """Scaffold while the selection score rises, weights once a scaffold step stops helping."""
    last = state.history[-1] if state.history else None
    return "weights" if last is not None and last.lever == "scaffold" and not last.accepted else "scaffold"


POLICIES: dict[str, Callable[[SIAState, Lever | None], Lever]] = {
    "llm": _llm,
    "scaffold-only": lambda state, llm_lever: "scaffold",
    "weights-only": lambda state, llm_lever: "weights",
    "alternate": _alternate,
    "plateau": _plateau,
}


def stop_reason(state: SIAState) -> str | None:
    """Why the loop ends whatever the Feedback-Agent says (None: it may go on)."""
    if state.flagged:
        return f"run flagged: {state.flagged}"
    if state.generation >= state.max_generations:
        return f"reached max_generations={state.max_generations}"
    if state.target_score is not None and (state.incumbent_selection or 0) >= state.target_score:
        return f"selection score {state.incumbent_selection} reached target {state.target_score}"
    return None


def will_continue(state: SIAState) -> bool:
    """Whether another generation may follow (what a budget can pause)."""
    return stop_reason(state) is None


def choose_lever(state: SIAState, llm_lever: Lever | None, weights_available: bool) -> tuple[Lever, str]:
    """The next lever and why; stops on a flag, max generations or a reached target score."""
    if why := stop_reason(state):
        return "stop", why
    if state.policy not in POLICIES:
        raise ValueError(f"unknown policy {state.policy!r}; choose one of {sorted(POLICIES)}")
    lever = POLICIES[state.policy](state, llm_lever)
    if lever == "weights" and not weights_available:
        if state.policy == "weights-only":
            return "stop", "weights-only policy but the target model is remote (no weights to train)"
        return "scaffold", "weights unavailable (remote target model); using scaffold"
    return lever, f"policy {state.policy}"

"""Budgets: what a run has spent (wall time, tokens per role, dollars) and whether a limit in
`RunConfig.budget` is reached.

Spend is read from what the run already records, so it survives a resume and needs no counter
of its own: wall time is the sum of the generations' `wall_s`; tokens are the prompt and
completion tokens of the calls in run.db's `model_calls` (every target call and every embedded
meta/feedback call goes through our gateway; a remote meta/feedback call is recorded by
`sia.llm.RoleLLM`), each call's role read from its purpose; dollars are those tokens at each
role's prices.

`budget_gate` runs first in the feedback node, before a lever is chosen: a reached limit pauses
the run there with LangGraph's `interrupt` (the checkpoint stays at `feedback`, so the run is
not finished). Running the graph again re-runs the feedback node from its start, and so the
check: with the same config it pauses again; with a larger limit (`sia resume RUN --max-wall
…`, which rewrites config.json) it goes on, and every generation already scored is read from
the checkpoint and run.db, never recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.config import BudgetConfig, RunConfig
from sia.files import write_json_atomic
from sia.graph.state import GenerationResult

ROLES = ("meta", "feedback", "target")


def role_of(purpose: str | None) -> str:
    """A recorded call's role: the meta and feedback roles' calls carry their role as purpose;
    every other purpose (task, search, smoke, rollout, transfer…) is the target model's."""
    base = (purpose or "").split(":")[0]
    return base if base in ("meta", "feedback") else "target"


@dataclass
class Spend:
    """What a run (or one generation) spent."""

    wall_s: float = 0.0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())


def token_spend(run_db: Path, run_id: str, config: RunConfig, since: float | None = None) -> Spend:
    """Tokens per role and their cost, over the run's recorded calls made after `since` (an epoch
    time; None: all). Read-only: a missing run.db or table is no spend."""
    spend = Spend()
    for purpose, prompt, completion in RunDB.read_token_sums(run_db, run_id, since):
        role = role_of(purpose)
        spend.tokens[role] += prompt + completion
        spend.usd += getattr(config, role).usd(prompt, completion)
    return spend


def generation_spend(run_db: Path, run_id: str, config: RunConfig, generation: int) -> Spend:
    """The tokens and cost of one generation: the calls made since the previous generation was
    saved (its lever's and its evaluations', and the Feedback-Agent's choice of its lever)."""
    return token_spend(run_db, run_id, config, since=RunDB.read_saved_before(run_db, run_id, generation))


def with_spend(result: GenerationResult, run_db: Path, config: RunConfig, run_id: str) -> GenerationResult:
    """`result` with its generation's tokens and cost, as it is saved."""
    spend = generation_spend(run_db, run_id, config, result.generation)
    return result.model_copy(update={"tokens": spend.tokens, "usd": round(spend.usd, 6)})


def run_spend(run_db: Path, run_id: str, config: RunConfig, history) -> Spend:
    """The whole run's spend so far: its generations' wall time plus every recorded call."""
    spend = token_spend(run_db, run_id, config)
    spend.wall_s = sum(h.wall_s or 0 for h in history)
    return spend


def reached(spend: Spend, budget: BudgetConfig) -> str | None:
    """Which limit the spend has reached, as a sentence naming the flag that raises it; None: none."""
    if budget.max_wall_s is not None and spend.wall_s >= budget.max_wall_s:
        return f"wall time {spend.wall_s:.0f} s reached --max-wall {budget.max_wall_s:g}"
    for role, limit in budget.max_tokens.items():
        used = spend.total_tokens if role == "total" else spend.tokens.get(role, 0)
        if used >= limit:
            flag = f"{limit}" if role == "total" else f"{role}={limit}"
            return f"{role} tokens {used} reached --max-tokens {flag}"
    if budget.max_usd is not None and spend.usd >= budget.max_usd:
        return f"cost ${spend.usd:.4f} reached --max-usd {budget.max_usd:g}"
    return None


def budget_gate(paths: RunPaths, config: RunConfig, history, generation: int) -> None:
    """Pause the run (LangGraph `interrupt`) when a limit is reached; else clear a former pause."""
    from langgraph.types import interrupt

    paused = paths.paused
    why = reached(run_spend(paths.run_db, paths.run_id, config, history), config.budget)
    if why is None:
        paused.unlink(missing_ok=True)
        return
    write_json_atomic(paused, {"reason": why, "generation": generation})
    interrupt({"budget": why, "generation": generation})

"""The loop's one typed state, in layers: what a user passes in, then what the loop adds.

Heavy data (per-item outputs, trajectories, model calls) lives in the run database and the
generation folders; the state holds scores, paths and decisions, so checkpoints stay small.
"""

from __future__ import annotations

import operator
from typing import Annotated, Literal

from pydantic import BaseModel, Field

Lever = Literal["scaffold", "weights", "stop"]
Policy = Literal["llm", "scaffold-only", "weights-only", "alternate", "plateau"]


class Candidate(BaseModel):
    """A scaffold + adapter pair that one generation evaluates."""

    generation: int = Field(description="Generation number (1 = the Meta-Agent's first agent).")
    lever: Literal["meta", "scaffold", "weights"] = Field(description="What produced it.")
    scaffold_path: str = Field(description="Path of its target_agent.py.")
    scaffold_sha: str = Field(description="SHA-256 of the scaffold text (evaluation cache key).")
    adapter: str | None = Field(None, description="Adapter version served with it; None is the base model.")
    rationale: str = Field("", description="Why it was proposed.")


class GenerationResult(BaseModel):
    """One row of the per-generation table."""

    generation: int
    lever: str
    adapter: str | None
    feedback: float | None = Field(description="Feedback-split score (agents see per-item results).")
    selection: float | None = Field(description="Selection-split score (decides acceptance).")
    test: float | None = Field(description="Private test score (reported only, never shown to agents).")
    accepted: bool = Field(description="Whether it became the incumbent.")
    p_value: float | None = Field(None, description="Keep-best's paired-test p-value against the incumbent (None: no test ran).")
    guards: str | None = Field(None, description="Whether the task's guard metrics held ('held (…)' or 'BLOCKED by …'); "
                                                 "None: no guards checked (a first candidate, a task without guards, an old run).")
    wall_s: float = Field(description="Seconds spent on this generation, evaluation and lever included.")
    tokens: dict[str, int] | None = Field(None, description="Prompt + completion tokens per role (meta, feedback, "
                                          "target) of the calls made for this generation (None: an old run).")
    usd: float | None = Field(None, description="What those tokens cost at the roles' prices (nodes/budget.py).")
    note: str = ""


class SIAInput(BaseModel):
    """What a user passes to start a run."""

    run_id: str = Field(description="Thread id and folder name under runs/.")
    task: str = Field(description="A built-in task name or a task directory.")
    max_generations: int = Field(4, ge=1, description="Stop after this many generations.")
    policy: Policy = Field("llm", description="Lever policy.")
    target_score: float | None = Field(None, description="Stop once the incumbent's selection score reaches this.")
    limit: int | None = Field(None, ge=1, description="Cap on items per split (for quick runs and tests).")


class SIAState(SIAInput):
    """The full loop state."""

    generation: int = Field(0, description="Generation of the current candidate.")
    candidate: Candidate | None = Field(None, description="What the task node evaluates next.")
    incumbent: Candidate | None = Field(None, description="The best accepted candidate so far.")
    incumbent_selection: float | None = Field(None, description="The incumbent's selection score.")
    history: Annotated[list[GenerationResult], operator.add] = Field(default_factory=list)
    diagnosis: str = Field("", description="The Feedback-Agent's latest diagnosis.")
    next_lever: Lever | None = Field(None, description="The lever chosen for the next generation.")
    next_method: Literal["sft", "grpo", "entropic"] | None = Field(
        None, description="The training method the Feedback-Agent named with the weights lever (None: the config's).")
    tried: list[str] = Field(default_factory=list, description="Scaffold edits already proposed (nodes return the whole list).")
    lever_started: float | None = Field(None, description="Clock time when the current lever began (for wall time).")
    pending_result: GenerationResult | None = Field(None, description="A generation whose lever yielded no candidate, for record_failure to record.")
    errors: list[str] = Field(default_factory=list, description="Recorded, non-fatal failures (nodes return the whole list).")
    flagged: str | None = Field(None, description="Why the run was flagged (a protected file changed); a flagged run stops.")


class ScaffoldRewriteState(SIAState):
    """The scaffold-rewrite subgraph's own working fields on top of the loop state."""

    proposal: str | None = Field(None, description="Proposed target_agent.py text.")
    proposal_rationale: str = ""
    proposal_edit: str | None = Field(None, description="Library edit id, when the proposal came from the edit library.")
    proposal_search: str = Field("", description="The edit search's readable record (nodes/edit_search.py), for improvement.md.")
    attempts: int = 0
    last_error: str | None = None
    validated: bool = False
    give_up: bool = False


class FinetuneState(SIAState):
    """The fine-tuning subgraph's working fields on top of the loop state."""

    dataset_path: str | None = None
    dataset_rows: int = 0
    adapter_dir: str | None = None
    train_summary: dict | None = None
    method: str | None = Field(None, description="The training method this generation uses (sft, grpo, entropic).")


class SubgraphOutput(BaseModel):
    """What a lever subgraph hands back to the loop (no reducer fields, so nothing is appended twice)."""

    generation: int
    candidate: Candidate | None
    tried: list[str]
    errors: list[str]
    pending_result: GenerationResult | None

"""The records the loop keeps: a model call as the gateway recorded it (`ModelCall`), and how
one item of one evaluation went (`ItemResult`).

They live below every component because both sides of a record need them: the gateway and the
evaluation make them, the run database (checkpoints.rundb) stores them, keep-best, the agents'
failure lists and fine-tuning read them. Imports no component."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields


@dataclass
class ModelCall:
    """One recorded target-model call (a row of the run database's `model_calls`)."""

    run_id: str
    generation: int
    adapter_version: str | None
    item: str | None
    purpose: str
    messages: list[dict]
    response_format: dict | None
    completion: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    created: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ItemResult:
    """One item of one evaluation (a row of the run database's `item_results`): what the agent
    answered under its tag, the gold answer (None where the task's own evaluator keeps it) and the
    score. `adapter` is "base" for the base model; `metrics` the item's values of the task's guard
    metrics (None: none reported, or scored before guards existed)."""

    run_id: str
    generation: int
    scaffold_sha: str
    adapter: str
    split: str
    item_id: str
    tag: str
    prediction: str | None
    gold: str | None
    score: float
    error: str | None = None
    metrics: dict[str, float] | None = None

    def row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> "ItemResult":
        values = {f.name: row.get(f.name) for f in fields(cls)}
        if isinstance(values["metrics"], str):  # a run.db column holds it as JSON
            values["metrics"] = json.loads(values["metrics"])
        return cls(**values)

"""Run configuration: one flat config object per component, saved with each run.

Defaults run fully offline on a laptop CPU with the embedded model behind our gateway.
A role (meta, feedback, target) points at any OpenAI-compatible endpoint instead by
setting `base_url`, `model` and the name of the environment variable holding its key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sia.finetune.config import FinetuneConfig
from sia.gateway.model_store import EMBEDDED_MODEL_NAME, Precision
from sia.nodes.keep_best import KeepBestConfig
from sia.sandbox.limits import SandboxLimits


class RoleConfig(BaseModel):
    """Which model plays one role, and what it can do."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(None, description="OpenAI-compatible base URL; None means the embedded model via our gateway.")
    model: str = Field(EMBEDDED_MODEL_NAME, description="Model name sent in each request.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key (never stored).")
    can_write_code: bool = Field(False, description="Whether this model writes whole agents; if not, typed scaffold edits are used.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature for this role.")
    max_tokens: int = Field(256, ge=16, description="Completion token limit for this role (raise it for a code-writing model).")
    timeout_s: float = Field(300, gt=0, description="Per-request timeout.")

    @property
    def embedded(self) -> bool:
        return self.base_url is None


class ScaffoldConfig(BaseModel):
    """The scaffold-rewrite subgraph."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=10, description="Proposals tried per rewrite before giving up (each retry sees the last error).")
    smoke_items: int = Field(4, ge=1, description="Feedback items in the validation smoke run.")


class GatewayConfig(BaseModel):
    """Our local OpenAI-compatible gateway."""

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(16, ge=1, description="Most requests decoded together in one batch.")
    batch_window_ms: float = Field(15, ge=0, description="How long the batcher waits for more requests to join a batch.")
    greedy_cache_entries: int = Field(
        50_000, ge=0, description="Greedy completions kept per set of weights, so that a repeated request is answered "
                                  "without decoding it again (0: off; see gateway/cache.py).")
    precision: Precision = Field(
        "auto", description="Dtype the embedded model is served in; 'auto' is bf16 where it is measured clearly "
                            "faster (a GPU, or e.g. a CPU with AMX: about 2x faster generation), else fp32.")


class RunConfig(BaseModel):
    """Everything a run needs besides its inputs; written to runs/RUN/config.json."""

    model_config = ConfigDict(extra="forbid")

    runs_dir: Path = Field(Path("runs"), description="Where run folders go (git-ignored).")
    meta: RoleConfig = Field(default_factory=RoleConfig, description="The Meta-Agent's model (writes generation 1).")
    feedback: RoleConfig = Field(default_factory=RoleConfig, description="The Feedback-Agent's model (diagnoses, picks levers, rewrites).")
    target: RoleConfig = Field(default_factory=RoleConfig, description="The target model the task agent calls.")
    sandbox: SandboxLimits = Field(default_factory=SandboxLimits, description="Limits for every generated agent run.")
    finetune: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig(save_steps=4, max_length=1024),
                                     description="LoRA training settings for the weights lever.")
    scaffold: ScaffoldConfig = Field(default_factory=ScaffoldConfig, description="Scaffold-rewrite settings.")
    gateway: GatewayConfig = Field(default_factory=GatewayConfig, description="Gateway batching.")
    keep_best: KeepBestConfig = Field(default_factory=KeepBestConfig, description="When a candidate replaces the incumbent (paired test on the selection split).")
    report_rejected: bool = Field(False, description="Also score rejected candidates on the feedback and test splits (costs time, changes nothing).")
    rollout_items: int = Field(48, ge=0, description="Training-pool items the incumbent runs on to make fine-tuning data.")
    train_on: Literal["incumbent_scaffold", "all_scaffolds"] = Field(
        "incumbent_scaffold", description="Which recorded calls become fine-tuning rows: only those the incumbent "
        "scaffold made (the prompts the adapter will be served under), or those of every scaffold in the run.")

    @model_validator(mode="after")
    def _target_writes_no_code(self) -> "RunConfig":
        if self.target.can_write_code:
            raise ValueError("target.can_write_code is meaningless: the target model is called by the agent, it writes nothing")
        return self

    @property
    def weights_available(self) -> bool:
        """LoRA training needs the weights, which only the embedded target has."""
        return self.target.embedded

    @classmethod
    def from_env(cls) -> "RunConfig":
        """Defaults, overridden by a JSON file named in SIA_CONFIG and SIA_RUNS_DIR."""
        data = {}
        if path := os.environ.get("SIA_CONFIG"):
            data = json.loads(Path(path).read_text())
        cfg = cls.model_validate(data)
        if runs := os.environ.get("SIA_RUNS_DIR"):
            cfg = cfg.model_copy(update={"runs_dir": Path(runs)})
        return cfg

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            data = json.loads(Path(path).read_text())
            if isinstance(data, dict) and "min_improvement" in data:  # runs from before keep_best: same rule
                data["keep_best"] = {"test": "none", "min_improvement": data.pop("min_improvement")}
            return cls.model_validate(data)
        except ValueError as exc:
            raise ValueError(f"{path}: invalid run config: {exc}") from exc

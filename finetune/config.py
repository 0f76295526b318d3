"""One flat, validated configuration for a LoRA SFT run.

The defaults are sized for a 135M-parameter model on a 2-core CPU: about 70 rows of
~500 tokens train for 3 epochs (27 steps) in about 4 minutes with bf16 autocast. The parent process serialises this
model to JSON and `finetune.train_lora` reads it back, so every field must stay
JSON-friendly.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sia.gateway.model_store import Precision

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FinetuneConfig(BaseModel):
    """Hyper-parameters and run options for `finetune.train_lora`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank: width of the low-rank update matrices.")
    lora_alpha: float = Field(
        32, gt=0, description="LoRA scaling numerator; the update is scaled by lora_alpha / lora_r."
    )
    lora_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input path (0 keeps small runs deterministic)."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: list(ALL_LINEAR),
        min_length=1,
        description="Leaf names of the Linear layers that get LoRA adapters (default: every linear layer "
        "of a llama block).",
    )
    learning_rate: float = Field(
        1e-3, gt=0.0, le=1.0, description="Peak AdamW learning rate (high because data is small and steps few)."
    )
    epochs: float = Field(3, gt=0, description="Passes over the dataset; ignored when max_steps > 0.")
    max_steps: int = Field(
        -1, description="Optimizer steps to run; -1 means derive them from epochs, a positive value overrides epochs."
    )
    batch_size: int = Field(8, ge=1, description="Examples per forward/backward pass.")
    grad_accum: int = Field(1, ge=1, description="Forward/backward passes accumulated per optimizer step.")
    max_length: int = Field(
        384, ge=16, description="Token limit per example (prompt + completion); longer rows are cut at the end."
    )
    seed: int = Field(0, ge=0, description="Seed for LoRA initialisation, data order and dropout.")
    save_steps: int = Field(
        5, ge=1, description="Write a resumable trainer checkpoint every this many optimizer steps."
    )
    save_total_limit: int = Field(2, ge=1, description="Trainer checkpoints kept on disk; older ones are deleted.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, about 30% slower; off suits CPU."
    )
    precision: Precision = Field(
        "auto",
        description="'bf16' trains under bfloat16 autocast (LoRA weights and optimizer stay float32): about "
        "2x faster on a CPU with AMX, slower on one without. 'auto' picks bf16 where it is measured clearly "
        "faster (gateway.model_store.native_bf16), else 'fp32'.",
    )
    backend: Literal["unsloth", "trl"] = Field(
        "unsloth",
        description="'unsloth' loads the model through Unsloth's FastLanguageModel; 'trl' uses plain "
        "transformers + PEFT. Both train with TRL's SFTTrainer.",
    )
    allow_fallback: bool = Field(
        True,
        description="With backend='unsloth', train with 'trl' when Unsloth cannot be imported or cannot "
        "load the model; the summary records which backend ran. False makes that failure fatal.",
    )
    min_examples: int = Field(4, ge=1, description="Refuse datasets with fewer valid rows than this.")

    @field_validator("target_modules")
    @classmethod
    def _check_target_modules(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not _MODULE_NAME.match(name)]
        if bad:
            raise ValueError(f"target_modules must be plain layer names like 'q_proj'; got {bad}")
        dupes = sorted({name for name in value if value.count(name) > 1})
        if dupes:
            raise ValueError(f"target_modules lists {dupes} more than once")
        return value

    @model_validator(mode="after")
    def _check_cross_fields(self) -> "FinetuneConfig":
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps={self.max_steps}: use -1 to train for `epochs` epochs, or a positive number of steps"
            )
        ratio = self.lora_alpha / self.lora_r
        if not 1 / 16 <= ratio <= 16:
            raise ValueError(
                f"lora_alpha / lora_r = {self.lora_alpha:g} / {self.lora_r} = {ratio:g} scales the LoRA update "
                "far outside the usual range (1 to 2); the two values are probably swapped or mistyped"
            )
        return self

    def examples_per_step(self) -> int:
        """Examples consumed by one optimizer step."""
        return self.batch_size * self.grad_accum

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps a run on `n_examples` rows will take (what the trainer will report as max_steps)."""
        if self.max_steps > 0:
            return self.max_steps
        per_epoch = max(1, math.ceil(math.ceil(n_examples / self.batch_size) / self.grad_accum))
        return max(1, math.ceil(per_epoch * self.epochs))


def describe_errors(error: ValidationError) -> str:
    """A pydantic ValidationError as one line: `field: problem; field: problem`."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "config"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)

"""Every configuration of SIA, in one place: one flat, documented config per component (fine-tuning,
sandbox limits, keep-best, the gateway, the scaffold rewrite, each role's model), each with one
set of defaults, and `RunConfig`, which holds them all and is saved with each run.

Defaults run fully offline on a laptop CPU with the embedded model behind our gateway.
A role (meta, feedback, target) points at any OpenAI-compatible endpoint instead by
setting `base_url`, `model` and the name of the environment variable holding its key.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sia.precision import Precision

EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"  # the target model served by our gateway by default


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
        1024, ge=16, description="Token limit per example (prompt + completion); longer rows are cut at the end."
    )
    seed: int = Field(0, ge=0, description="Seed for LoRA initialisation, data order and dropout.")
    save_steps: int = Field(
        4, ge=1, description="Write a resumable trainer checkpoint every this many optimizer steps."
    )
    save_total_limit: int = Field(2, ge=1, description="Trainer checkpoints kept on disk; older ones are deleted.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, about 30% slower; off suits CPU."
    )
    precision: Precision = Field(
        "auto",
        description="'bf16' trains under bfloat16 autocast (LoRA weights and optimizer stay float32): about "
        "2x faster on a CPU with AMX, slower on one without. 'auto' picks bf16 where it is measured clearly "
        "faster (sia.precision.native_bf16), else 'fp32'.",
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
    method: Literal["auto", "sft", "grpo", "entropic"] = Field(
        "auto",
        description="'sft': rewarded completions kept, the others replaced by the gold answer. 'grpo': a group "
        "of completions sampled per recorded prompt, each rewarded by the task's own scoring, group-normalised "
        "advantages (TRL's GRPOTrainer). 'entropic': the same samples, advantages from an exponential tilt of "
        "the group's rewards (weights proportional to exp(reward / entropic_tau)). 'auto': sft where the "
        "training items have gold answers, grpo where the task only gives rewards. The Feedback-Agent may name "
        "the method when it picks the weights lever.",
    )
    num_generations: int = Field(4, ge=2, description="GRPO/entropic: completions sampled per prompt (one group).")
    max_completion_length: int = Field(
        96, ge=1, description="GRPO/entropic: token limit of each sampled completion (the scaffold's max_tokens is "
        "a good value).")
    temperature: float = Field(0.7, gt=0, description="GRPO/entropic: sampling temperature of the groups (at 1.0 "
                               "most of the 135M model's samples wander off the question).")
    entropic_tau: float = Field(
        0.5, gt=0, description="Entropic: temperature of the tilt; small values put nearly all the weight on the "
        "group's best completion, large ones approach GRPO without the std scaling.")
    kl_beta: float = Field(0.0, ge=0, description="GRPO/entropic: KL penalty to the base model (0: no reference "
                           "model is kept, half the memory and time).")

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

    @model_validator(mode="after")
    def _check_groups(self) -> "FinetuneConfig":
        if self.method in ("grpo", "entropic") and self.examples_per_step() % self.num_generations:
            raise ValueError(f"batch_size * grad_accum = {self.examples_per_step()} must be a multiple of "
                             f"num_generations = {self.num_generations} (each step trains on whole groups)")
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


class SandboxLimits(BaseModel):
    """Limits applied to every sandboxed child (agents, evaluators, solutions); see `sandbox.runner`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_timeout_s: float = Field(600.0, gt=0, description="Wall-clock limit in seconds (for an agent: plus "
                                  "item_wall_s per item it predicts). On expiry every process of the sandbox is sent SIGKILL.")
    cpu_time_s: int = Field(1200, gt=0, description="CPU seconds per process (RLIMIT_CPU; for an agent: plus item_cpu_s "
                            "per item); SIGXCPU/SIGKILL when exceeded.")
    item_wall_s: float = Field(3.0, ge=0, description="Wall-clock seconds an agent run gets per item it predicts, on top "
                               "of wall_timeout_s: the model's work grows with the items (about 0.5-1 s per call of the "
                               "embedded model on a 2-core CPU, more with votes, retries or a busy machine).")
    item_cpu_s: float = Field(0.5, ge=0, description="CPU seconds an agent process gets per item, on top of cpu_time_s "
                              "(its own work: prompts, parsing, a classifier; the model runs in the gateway).")
    memory_mb: int = Field(4096, gt=0, description="Memory of the whole sandbox in MiB (control group: resident memory, "
                           "page cache and tmpfs files, the working folder included) and address space per process "
                           "(RLIMIT_AS: virtual memory, so thread stacks and mmaps count too); a bare Python needs a "
                           "few tens of MiB, heavy libraries (torch) need far more.")
    open_files: int = Field(256, gt=0, description="Maximum open file descriptors per process (RLIMIT_NOFILE).")
    processes: int = Field(64, gt=0, description="Maximum processes plus threads in the sandbox (control group pids.max, "
                           "and RLIMIT_NPROC of its uid, which no other sandbox shares).")
    output_bytes: int = Field(2_000_000, gt=0, description="Bytes of stdout+stderr kept (the tail; the rest is discarded "
                              "and the result flagged as truncated). A child that writes more than 8x this in total is killed.")
    file_size_mb: int = Field(256, gt=0, description="Largest file the child may write, in MiB (RLIMIT_FSIZE); all its "
                              "files together are bounded by disk_mb and scratch_mb.")
    isolate_network: bool = Field(True, description="Run the child in its own network namespace where only the forwarded "
                                  "ports (the gateway) answer on 127.0.0.1. Needs root (CAP_SYS_ADMIN); elsewhere the "
                                  "child shares the host network and the result says so.")
    disk_mb: int = Field(1024, gt=0, description="Size of the working folder in MiB: a tmpfs (RAM, counted in the "
                         "control group) of this size; writing past it fails inside the child (ENOSPC), never on "
                         "the host's disk. Its files are copied back to the caller after the run.")
    scratch_mb: int = Field(256, gt=0, description="Size in MiB of each of the child's own /tmp, /var/tmp, /dev/shm and "
                            "/run/lock (tmpfs, counted in the control group).")
    gpu: bool = Field(False, description="Bind the GPU device nodes (/dev/nvidia*, /dev/dri) and /sys into the sandbox "
                      "(solutions that run CUDA kernels).")
    allow_unsafe: bool = Field(False, description="Run generated code even where it cannot be isolated (no root or no "
                               "bubblewrap): rlimits only, readable by it everything the user can read. Off by "
                               "default; `--unsafe-sandbox` turns it on, under a banner, and the run records it.")
    uid: int | None = Field(None, gt=0, description="Ignored (kept so configs of earlier runs load): each sandbox now "
                            "leases its own uid from 61000-64999 (see sandbox.uids).")

    def for_items(self, n_items: int) -> "SandboxLimits":
        """These limits for an agent run predicting `n_items` items: time grows with the work."""
        return self.model_copy(update={"wall_timeout_s": self.wall_timeout_s + self.item_wall_s * n_items,
                                       "cpu_time_s": self.cpu_time_s + int(self.item_cpu_s * n_items)})


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
    engine: Literal["openai-compatible", "vllm", "sglang"] = Field(
        "openai-compatible", description="What serves a remote target: a vLLM or SGLang server loads LoRA adapters "
        "at run time (vLLM started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), which keeps the "
        "weights lever; any other endpoint serves the base model only.")
    base_weights: str | None = Field(None, description="With engine vllm or sglang: the local folder of the "
                                     "target's base weights (Hugging Face format) that adapters are trained on, "
                                     "here; the engine must read the adapters' folders at the same paths.")
    max_concurrency: int = Field(8, ge=1, description="A remote endpoint's requests in flight at once (the "
                                 "target's batch is sent concurrently up to this; a vLLM/SGLang server takes many).")
    max_retries: int = Field(2, ge=0, description="Retries of a failed request to a remote endpoint (connection "
                             "errors, 429 and 5xx), with exponential backoff.")
    usd_per_1m_prompt_tokens: float = Field(0.0, ge=0, description="Price of a million prompt tokens at this "
                                            "endpoint (what --max-usd counts; 0 for the embedded model).")
    usd_per_1m_completion_tokens: float = Field(0.0, ge=0, description="Price of a million completion tokens "
                                                "(as usd_per_1m_prompt_tokens).")

    def usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """What these tokens cost at this role's prices."""
        return (prompt_tokens * self.usd_per_1m_prompt_tokens + completion_tokens * self.usd_per_1m_completion_tokens) / 1e6

    @property
    def priced(self) -> bool:
        return bool(self.usd_per_1m_prompt_tokens or self.usd_per_1m_completion_tokens)

    @property
    def embedded(self) -> bool:
        return self.base_url is None


class ScaffoldConfig(BaseModel):
    """The scaffold-rewrite subgraph."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=10, description="Proposals tried per rewrite before giving up (each retry sees the last error).")
    smoke_items: int = Field(4, ge=1, description="Feedback items in the validation smoke run.")
    # The edit search (nodes/edit_search.py), used when the feedback model cannot write code: library
    # edits compete by successive halving on feedback items. One item-evaluation (one agent answer on
    # one item) costs ~0.5-1 s of the embedded 135M model on a 2-core laptop CPU (less when the
    # gateway's greedy cache already holds the prompt), and each round is one sandboxed agent run
    # per candidate, so the defaults spend about 1-2 minutes in 3 rounds (6 -> 3 -> 2 candidates).
    search_items_budget: int = Field(120, ge=0, description="Most item-evaluations one edit search spends "
                                     "(all rounds, all candidates). 0 turns the search off: the LLM's menu pick is "
                                     "applied as it is.")
    search_candidates: int = Field(6, ge=1, description="Library edits in the search's first round: the LLM's "
                                   "menu pick, then the untried applicable edits in library order; halved each "
                                   "round while the items double. Fewer when the budget cannot give each one item.")
    search_generation_1: bool = Field(True, description="Also search at generation 1 (the Meta-Agent, when it "
                                      "cannot write code), the unedited reference agent competing as one candidate: "
                                      "the small model's own pick is close to chance, and on a large task a poor first "
                                      "agent costs the most time (every item through the model). Off: generation 1 is "
                                      "the Meta-Agent's pick as it is.")


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
    # What one caller may ask of the gateway (see gateway/server.py). The agent is untrusted code:
    # every limit below holds per token, so one evaluation cannot starve the loop or fill run.db.
    # An agent run makes about one call per item, for a few hundred items at most.
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body read; a bigger declared "
                                "Content-Length (or chunked body) gets 413 without being read.")
    max_schema_bytes: int = Field(16_384, ge=256, description="Largest response_format JSON schema (as JSON); "
                                  "it is compiled to a grammar and stored with every call.")
    max_schema_depth: int = Field(32, ge=2, description="Deepest nesting of objects and lists in a JSON schema.")
    request_timeout_s: float = Field(600, gt=0, description="Longest a request waits for its completion; then 504 "
                                     "(and it is not decoded if it has not started).")
    token_requests: int = Field(5_000, ge=1, description="Completion requests one token may make (429 after).")
    token_concurrency: int = Field(32, ge=1, description="Requests one token may have in flight at once (429 beyond).")
    token_prompt_tokens: int = Field(10_000_000, ge=1, description="Prompt tokens one token may spend (429 once "
                                     "spent; a request is admitted while some are left).")
    token_completion_tokens: int = Field(1_000_000, ge=1, description="Completion tokens one token may spend (as "
                                         "token_prompt_tokens).")
    calls_per_tag: int = Field(32, ge=1, description="Calls one token may make under one item tag (votes and "
                               "retries included; 429 after).")
    rejections_recorded: int = Field(1_000, ge=1, description="Rejected requests recorded in run.db per token "
                                     "(requests with unknown tokens share one count); later ones are only counted.")
    max_connections: int = Field(256, ge=2, description="Open connections to the gateway; a connection beyond gets "
                                 "503 and is closed at once.")
    idle_timeout_s: float = Field(30, gt=0, description="A connection with no request in progress and none answered "
                                  "in this long is closed; a request body must arrive within it.")


class KeepBestConfig(BaseModel):
    """How a candidate must beat the incumbent on the selection split."""

    model_config = ConfigDict(extra="forbid")

    test: Literal["bootstrap", "mcnemar", "none"] = Field("bootstrap", description="Paired test on per-item selection scores.")
    confidence: float = Field(0.8, gt=0.5, lt=1, description="Accept when the one-sided p-value is at most 1 - confidence.")
    min_improvement: float = Field(0.0, ge=0, description="The candidate's mean must also exceed the incumbent's by more than this.")
    resamples: int = Field(10_000, ge=100, description="Bootstrap resamples.")
    seed: int = Field(0, description="Bootstrap seed (decisions are reproducible).")
    guards: bool = Field(True, description="Also check the task's guard metrics (tasks.base.Guard): a candidate whose "
                                           "guard worsens significantly, or is past its bound, is not accepted.")
    guard_confidence: float = Field(0.9, gt=0.5, lt=1, description="A guard blocks when the one-sided p-value of its "
                                    "worsening is at most 1 - guard_confidence (a bootstrap, or a plain comparison with "
                                    "test: none). By default higher than `confidence`, so that noise in a guard blocks a real gain "
                                    "less often than noise in the metric admits a false one.")


BudgetRole = Literal["meta", "feedback", "target", "total"]


class BudgetConfig(BaseModel):
    """Limits on what a run spends (`nodes/budget.py`). They are checked before each lever, so a
    generation in progress finishes; a run that reaches one pauses with its checkpoint kept, and
    `sia resume RUN` with a larger limit continues it with nothing recomputed. None: no limit."""

    model_config = ConfigDict(extra="forbid")

    max_wall_s: float | None = Field(None, gt=0, description="Most seconds the loop spends over all its "
                                     "generations (each generation's wall_s, summed; time paused does not count).")
    max_tokens: dict[BudgetRole, int] = Field(default_factory=dict, description="Most prompt + completion tokens "
                                              "per role (meta, feedback, target) or over all roles (total), "
                                              "counted from the calls recorded in run.db.")
    max_usd: float | None = Field(None, gt=0, description="Most US dollars the roles' endpoints cost, at the "
                                  "per-token prices in each role's config (usd_per_1m_*_tokens).")

    @model_validator(mode="after")
    def _positive_tokens(self) -> "BudgetConfig":
        if bad := {r: n for r, n in self.max_tokens.items() if n < 1}:
            raise ValueError(f"max_tokens must be at least 1 token: {bad}")
        return self


class RunConfig(BaseModel):
    """Everything a run needs besides its inputs; written to runs/RUN/config.json."""

    model_config = ConfigDict(extra="forbid")

    runs_dir: Path = Field(Path("runs"), description="Where run folders go (git-ignored).")
    checkpointer: str | None = Field(None, description="Where LangGraph's checkpoints go: None is "
                                     "runs/RUN/checkpoints.sqlite; a postgresql://… URL uses LangGraph's Postgres "
                                     "checkpointer (langgraph-checkpoint-postgres), one thread per run.")
    meta: RoleConfig = Field(default_factory=RoleConfig, description="The Meta-Agent's model (writes generation 1).")
    feedback: RoleConfig = Field(default_factory=RoleConfig, description="The Feedback-Agent's model (diagnoses, picks levers, rewrites).")
    target: RoleConfig = Field(default_factory=RoleConfig, description="The target model the task agent calls.")
    sandbox: SandboxLimits = Field(default_factory=SandboxLimits, description="Limits for every generated agent run.")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="LoRA training settings for the weights lever.")
    scaffold: ScaffoldConfig = Field(default_factory=ScaffoldConfig, description="Scaffold-rewrite settings.")
    gateway: GatewayConfig = Field(default_factory=GatewayConfig, description="Gateway batching and per-token limits.")
    keep_best: KeepBestConfig = Field(default_factory=KeepBestConfig, description="When a candidate replaces the incumbent (paired test on the selection split).")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Limits on wall time, tokens and cost; "
                                 "a run that reaches one pauses, resumable with a larger one.")
    report_rejected: bool = Field(False, description="Also score rejected candidates on the feedback and test splits (costs time, changes nothing).")
    eval_shards: int = Field(1, ge=1, le=64, description="Sandboxed agent runs that share one evaluation's items, "
                             "run at once (each with its own limits, so N shards use up to N times the memory). Pays "
                             "off when the target model serves many requests at once (a remote engine); the tasks "
                             "whose agent answers each item on its own only (per_item_calls), others run whole.")
    rollout_items: int = Field(48, ge=0, description="Training-pool items the incumbent runs on to make fine-tuning data.")
    train_on: Literal["incumbent_scaffold", "all_scaffolds"] = Field(
        "incumbent_scaffold", description="Which recorded calls become fine-tuning rows: only those the incumbent "
        "scaffold made (the prompts the adapter will be served under), or those of every scaffold in the run.")

    @model_validator(mode="after")
    def _target_writes_no_code(self) -> "RunConfig":
        if self.target.can_write_code:
            raise ValueError("target.can_write_code is meaningless: the target model is called by the agent, it writes nothing")
        if self.target.base_weights is not None and (self.target.embedded or self.target.engine == "openai-compatible"):
            raise ValueError("target.base_weights is for a remote vLLM or SGLang target: set target.engine to "
                             "'vllm' or 'sglang' (and target.base_url), or drop base_weights")
        if self.budget.max_usd is not None and not any(getattr(self, r).priced for r in ("meta", "feedback", "target")):
            raise ValueError("budget.max_usd needs prices: set usd_per_1m_prompt_tokens and usd_per_1m_completion_tokens "
                             "in the config of each role that costs money (meta, feedback, target)")
        return self

    @property
    def weights_available(self) -> bool:
        """LoRA training needs the base weights here and a target that serves adapters: the embedded
        model, or a vLLM/SGLang server given `base_weights` (adapters are loaded into it at run time)."""
        return self.target.embedded or (self.target.engine != "openai-compatible" and self.target.base_weights is not None)

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

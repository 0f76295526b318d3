"""The runtime context every node receives (`Runtime[RunContext]`): the run's config and its
services, the one object through which nodes have side effects.

Studio and `langgraph dev` invoke the graph without a context; then the config comes from
the environment (`RunConfig.from_env`) and `nodes.services.services` builds the real services
for the run's thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sia.config import RunConfig

if TYPE_CHECKING:
    from sia.checkpoints.paths import RunPaths
    from sia.checkpoints.rundb import RunDB
    from sia.finetune.trainer import Trainer
    from sia.gateway.server import Gateway
    from sia.llm import RoleLLM
    from sia.sandbox.runner import SandboxRunner
    from sia.tasks.base import Task


@runtime_checkable  # Studio builds a pydantic schema of RunContext, which checks this field with isinstance
class Services(Protocol):
    """Everything with side effects that nodes use; tests pass fakes (tests/fakes.py)."""

    config: RunConfig
    paths: RunPaths  # every path of the run
    db: RunDB  # run.db: item results, model calls, generations, adapters
    sandbox: SandboxRunner  # runs generated code
    trainer: Trainer  # trains LoRA adapters
    clock: Callable[[], float]

    @property
    def gateway(self) -> Gateway:
        """Our OpenAI-compatible gateway in front of the target model (started on first use)."""

    @property
    def python(self) -> str:
        """The interpreter sandboxed agents and evaluators run with."""

    def llm(self, role: str) -> RoleLLM:
        """The chat model of the 'meta' or 'feedback' role."""

    def task(self, name: str) -> Task:
        """The run's task, resolved (prepared, packaged files refreshed) once per run."""

    def base_model(self) -> Path:
        """The target model's base weights folder (what adapters are trained on): the embedded
        model's, or a vLLM/SGLang target's `base_weights`."""

    def release_adapter(self, version: str | None) -> None:
        """Free what serves adapter `version` (unloaded from a remote server); the loop calls it for
        a rejected adapter and for an incumbent's adapter once another replaces it."""


@dataclass
class RunContext:
    config: RunConfig = field(default_factory=RunConfig.from_env)
    services: Services | None = None  # None: nodes.services builds the real ones for the run

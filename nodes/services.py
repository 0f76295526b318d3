"""The real `graph.context.Services`: the gateway (and the models behind it), the sandbox, the
trainer, the role LLMs, the run database, the run's task and the clock. `services(runtime, state)`
is how a node gets the services of its run: the injected ones, else the real ones, built lazily
once per process and run."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from langgraph.runtime import Runtime

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.config import EMBEDDED_MODEL_NAME, RoleConfig, RunConfig
from sia.finetune.trainer import SubprocessTrainer, Trainer
from sia.gateway.model_store import safetensors_dir
from sia.gateway.server import Backend, CallScope, Gateway
from sia.graph.context import RunContext
from sia.graph.state import SIAInput
from sia.llm import RoleLLM, chat_model
from sia.records import ModelCall
from sia.sandbox.runner import SandboxRunner, SubprocessSandbox
from sia.tasks.base import Task
from sia.tasks.registry import resolve_task


def embedded_backends(paths: RunPaths, precision: str, cache_entries: int) -> Callable[[str | None], Backend]:
    """base + adapter version -> a loaded Engine (kept: a 135M model is ~0.5 GB) behind its greedy cache."""
    from sia.gateway.cache import GreedyCache
    from sia.gateway.engine import Engine

    engines: dict[str | None, GreedyCache] = {}
    lock = threading.Lock()

    def backend_for(adapter: str | None) -> Backend:
        with lock:
            if adapter not in engines:
                adapter_dir = None if adapter is None else paths.root / adapter / "adapter"
                engine = Engine.load(EMBEDDED_MODEL_NAME, adapter=adapter_dir, precision=precision)
                engines[adapter] = GreedyCache(engine, cache_entries)
            return engines[adapter]

    def release(adapter: str | None) -> None:
        with lock:
            if adapter is not None:
                engines.pop(adapter, None)  # loaded again if ever asked for

    backend_for.release = release
    return backend_for


@dataclass
class Services:
    config: RunConfig
    paths: RunPaths
    db: RunDB
    sandbox: SandboxRunner
    trainer: Trainer
    backend_for: Callable[[str | None], Backend]
    llm_override: dict[str, RoleLLM] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    base_model: Callable[[], Path] = safetensors_dir
    _gateway: Gateway | None = None
    _task: tuple[str, Task] | None = None
    _gateway_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def gateway(self) -> Gateway:
        """Started on first use, once: sharded evaluations may ask from several threads at once."""
        with self._gateway_lock:
            if self._gateway is None:
                gw = self.config.gateway
                self._gateway = Gateway(self.backend_for, self.db, max_batch=gw.max_batch,
                                        batch_window_ms=gw.batch_window_ms, model_name=self.config.target.model,
                                        limits=gw).start()
            return self._gateway

    def llm(self, role: str) -> RoleLLM:
        """The LLM for 'meta' or 'feedback'; an embedded role goes through our gateway."""
        if role in self.llm_override:
            return self.llm_override[role]
        cfg: RoleConfig = getattr(self.config, role)
        if cfg.embedded:
            base_url = self.gateway.base_url
            key = self.gateway.issue_token(CallScope(self.paths.run_id, 0, None, purpose=role), quotas=False)
        else:
            base_url, key = cfg.base_url, os.environ.get(cfg.api_key_env, "")
            if not key:
                raise RuntimeError(f"the {role} role needs an API key in ${cfg.api_key_env} (set it, or point the role elsewhere)")
        record = None if cfg.embedded else self._recorder(role)  # the gateway records the embedded model
        llm = RoleLLM(chat_model(base_url, cfg.model, key, cfg.temperature, cfg.max_tokens, cfg.timeout_s),
                      can_write_code=cfg.can_write_code, record=record)
        self.llm_override[role] = llm
        return llm

    def release_adapter(self, version: str | None) -> None:
        """Free what serves `version` (an adapter rejected, or an incumbent's replaced one): a remote
        server unloads it; the embedded model drops its engine. Nothing for the base model."""
        release = getattr(self.backend_for, "release", None)
        if version is None or release is None:
            return
        try:
            release(version)
        except Exception as exc:  # noqa: BLE001  (freeing is a courtesy: the verdict is saved, the run goes on)
            print(f"sia: could not release adapter {version}: {exc}", file=sys.stderr)

    def _recorder(self, role: str):
        """Records a remote role's calls in run.db as the gateway records the embedded model's, so
        that its tokens count in budgets and its prompts can be read."""
        def record(messages: list[dict], completion: str, prompt_tokens: int, completion_tokens: int, seconds: float):
            self.db.record_call(ModelCall(self.paths.run_id, 0, None, None, role, messages, None, completion,
                                          prompt_tokens, completion_tokens, round(seconds, 3)))
        return record

    @property
    def python(self) -> str:
        return sys.executable

    def task(self, name: str) -> Task:
        """The run's task, resolved once: resolving may prepare or download it and refreshes a
        built-in task's packaged files, which is work for a run's start, not for every node."""
        if self._task is None or self._task[0] != name:
            self._task = (name, resolve_task(name))
        return self._task[1]

    @classmethod
    def build(cls, config: RunConfig, run_id: str, **overrides) -> "Services":
        paths = RunPaths(config.runs_dir, run_id).create()
        db = RunDB(paths.run_db)
        target, base_model = config.target, safetensors_dir
        if target.embedded:
            backend_for = embedded_backends(paths, config.gateway.precision, config.gateway.greedy_cache_entries)
        elif config.weights_available:  # a vLLM/SGLang server: adapters are loaded into it as they come
            from sia.gateway.remote_adapters import RemoteAdapters

            backend_for = RemoteAdapters(target, paths.root, run_id)
            base_model = lambda: Path(target.base_weights)  # noqa: E731  (adapters are trained on these)
        else:
            from sia.gateway.remote import RemoteBackend

            remote = RemoteBackend.for_role(target)
            backend_for = lambda adapter: remote  # noqa: E731  (no weights lever: base model only)
        parts = dict(config=config, paths=paths, db=db, sandbox=SubprocessSandbox(record_dir=paths.sandboxes),
                     trainer=SubprocessTrainer(), backend_for=backend_for, base_model=base_model)
        parts.update(overrides)
        return cls(**parts)


_LIVE: dict[tuple[str, str], Services] = {}


def services_for(config: RunConfig, run_id: str) -> Services:
    """The process's Services for a run (the gateway and loaded models live as long as it)."""
    key = (str(Path(config.runs_dir).resolve()), run_id)
    if key not in _LIVE:
        _LIVE[key] = Services.build(config, run_id)
    return _LIVE[key]


def release_services(config: RunConfig, run_id: str) -> None:
    """Stop a run's gateway and forget its services (and with them its loaded models), for a process
    that drives several runs one after another (`sia compare`): each would otherwise hold its own."""
    svc = _LIVE.pop((str(Path(config.runs_dir).resolve()), run_id), None)
    if svc is not None and svc._gateway is not None:
        svc._gateway.stop()
        svc._gateway = None
    if svc is not None and (close := getattr(svc.backend_for, "close", None)):
        close()  # a remote target's HTTP clients and their threads


def services(runtime: Runtime[RunContext] | None, state: SIAInput) -> Services:
    """The services of this invocation: the injected ones, else the real ones for the state's run."""
    ctx = getattr(runtime, "context", None) or RunContext()
    return ctx.services if ctx.services is not None else services_for(ctx.config, state.run_id)

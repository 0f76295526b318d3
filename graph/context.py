"""The runtime context every node receives: the run's config and its services.

Studio and `langgraph dev` invoke the graph without a context; then the config comes from
the environment (`RunConfig.from_env`) and real services are built for the run's thread."""

from __future__ import annotations

from dataclasses import dataclass, field

from sia.graph.config import RunConfig


@dataclass
class RunContext:
    config: RunConfig = field(default_factory=RunConfig.from_env)
    services: object | None = None  # nodes.services.Services; None builds the real ones


def services(runtime, run_id: str):
    """The Services of this invocation (injected ones, else the real ones for `run_id`)."""
    from sia.nodes.services import services_for

    ctx = getattr(runtime, "context", None) or RunContext()
    if ctx.services is not None:
        return ctx.services
    return services_for(ctx.config, run_id)

"""Resource limits for one sandboxed run.

`SandboxLimits` is a plain pydantic model so it can live inside graph state,
run configs and JSON files. The runner turns the fields into rlimits, a wall
clock deadline, an output cap and (when the parent is root) a uid drop.
"""

from __future__ import annotations

import os
import resource

from pydantic import BaseModel, ConfigDict, Field


class SandboxLimits(BaseModel):
    """Limits applied to a child started by `sandbox.runner.run_sandboxed`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_timeout_s: float = Field(
        600.0,
        gt=0,
        description=(
            "Wall-clock limit in seconds. On expiry the child's whole process "
            "group and every process running as `uid` is sent SIGKILL."
        ),
    )
    cpu_time_s: int = Field(
        1200,
        gt=0,
        description="CPU seconds per process (RLIMIT_CPU); SIGXCPU/SIGKILL when exceeded.",
    )
    memory_mb: int = Field(
        4096,
        gt=0,
        description=(
            "Address-space limit per process in MiB (RLIMIT_AS). Counts virtual "
            "memory, so thread stacks and mmaps count too; a bare Python needs "
            "a few tens of MiB, heavy libraries (torch) need far more."
        ),
    )
    open_files: int = Field(
        256, gt=0, description="Maximum open file descriptors per process (RLIMIT_NOFILE)."
    )
    processes: int = Field(
        64,
        gt=0,
        description=(
            "Maximum processes plus threads owned by the sandbox uid (RLIMIT_NPROC). "
            "Only enforced because the child runs as an unprivileged uid; the "
            "kernel ignores it for root."
        ),
    )
    output_bytes: int = Field(
        2_000_000,
        gt=0,
        description=(
            "Bytes of stdout+stderr kept (the tail; the rest is discarded and the "
            "result flagged as truncated). A child that writes more than 8x this "
            "in total is killed."
        ),
    )
    file_size_mb: int = Field(
        256, gt=0, description="Largest file the child may write, in MiB (RLIMIT_FSIZE)."
    )
    isolate_network: bool = Field(
        True,
        description=(
            "Run the child in its own network namespace where only the forwarded "
            "ports (the gateway) answer on 127.0.0.1. Needs root (CAP_SYS_ADMIN); "
            "elsewhere the child shares the host network and the result says so."
        ),
    )
    uid: int | None = Field(
        None,
        gt=0,
        description=(
            "Unprivileged uid (also used as gid) the child runs as when the parent "
            "is root. Must be used by nothing else: after each run every process "
            "with this uid is killed. None picks 61000 + (pid % 4000), so concurrent "
            "SIA processes (tests, runs) never sweep each other's children."
        ),
    )

    def sandbox_uid(self) -> int:
        return self.uid if self.uid is not None else 61000 + os.getpid() % 4000

    def rlimits(self) -> list[tuple[int, int, int]]:
        """(resource, soft, hard) triples the child sets before exec; no core dumps."""
        mib = 1024 * 1024
        return [
            (resource.RLIMIT_CPU, self.cpu_time_s, self.cpu_time_s + 1),  # SIGXCPU, then SIGKILL
            (resource.RLIMIT_AS, self.memory_mb * mib, self.memory_mb * mib),
            (resource.RLIMIT_NOFILE, self.open_files, self.open_files),
            (resource.RLIMIT_NPROC, self.processes, self.processes),
            (resource.RLIMIT_FSIZE, self.file_size_mb * mib, self.file_size_mb * mib),
            (resource.RLIMIT_CORE, 0, 0),
        ]

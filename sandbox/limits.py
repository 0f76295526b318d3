"""What the runner makes of `sia.config.SandboxLimits` for one child: the uid it runs as and the
rlimits it sets before exec."""

from __future__ import annotations

import os
import resource

from sia.config import SandboxLimits


def sandbox_uid(limits: SandboxLimits) -> int:
    """The configured uid, else 61000 + (pid % 4000), so concurrent SIA processes differ."""
    return limits.uid if limits.uid is not None else 61000 + os.getpid() % 4000


def rlimits(limits: SandboxLimits) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) triples the child sets before exec; no core dumps."""
    mib = 1024 * 1024
    return [
        (resource.RLIMIT_CPU, limits.cpu_time_s, limits.cpu_time_s + 1),  # SIGXCPU, then SIGKILL
        (resource.RLIMIT_AS, limits.memory_mb * mib, limits.memory_mb * mib),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_NPROC, limits.processes, limits.processes),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * mib, limits.file_size_mb * mib),
        (resource.RLIMIT_CORE, 0, 0),
    ]

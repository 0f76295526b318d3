"""What the runner makes of `sia.config.SandboxLimits` for one child: the rlimits it sets before
exec (on top of the control group, which bounds the sandbox as a whole)."""

from __future__ import annotations

import resource

from sia.config import SandboxLimits


def rlimits(limits: SandboxLimits) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) triples the child sets before exec; no core dumps. With `gpu` there
    is no address-space limit: CUDA reserves far more virtual memory than it uses, and the
    control group bounds what is really used."""
    mib = 1024 * 1024
    address_space = [] if limits.gpu else [(resource.RLIMIT_AS, limits.memory_mb * mib, limits.memory_mb * mib)]
    return [
        (resource.RLIMIT_CPU, limits.cpu_time_s, limits.cpu_time_s + 1),  # SIGXCPU, then SIGKILL
        *address_space,
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_NPROC, limits.processes, limits.processes),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * mib, limits.file_size_mb * mib),
        (resource.RLIMIT_CORE, 0, 0),
    ]

"""Sandboxed execution of generated code: bubblewrap, a leased uid, a control group, seccomp, a
network namespace, tmpfs folders and a wall clock; records of live sandboxes and their sweep.

See `sandbox.runner` for what is and is not isolated; the limits are `sia.config.SandboxLimits`.
"""

from sia.sandbox.runner import (
    SandboxResult,
    SandboxRunner,
    SandboxUnavailable,
    SubprocessSandbox,
    run_sandboxed,
    scrubbed_env,
)

__all__ = [
    "SandboxResult",
    "SandboxRunner",
    "SandboxUnavailable",
    "SubprocessSandbox",
    "run_sandboxed",
    "scrubbed_env",
]

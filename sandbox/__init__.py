"""Sandboxed execution of generated code: rlimits, wall clock, uid drop, leftover sweep.

See `sandbox.runner` for what is and is not isolated; the limits are `sia.config.SandboxLimits`.
"""

from sia.sandbox.runner import (
    SandboxResult,
    SandboxRunner,
    SubprocessSandbox,
    run_sandboxed,
    scrubbed_env,
)

__all__ = [
    "SandboxResult",
    "SandboxRunner",
    "SubprocessSandbox",
    "run_sandboxed",
    "scrubbed_env",
]

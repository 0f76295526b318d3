"""Sandboxed execution of generated code: rlimits, wall clock, uid drop, leftover sweep.

See `sandbox.runner` for what is and is not isolated.
"""

from sia.sandbox.limits import SandboxLimits
from sia.sandbox.runner import (
    SandboxResult,
    SandboxRunner,
    SubprocessSandbox,
    run_sandboxed,
    scrubbed_env,
)

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "SandboxRunner",
    "SubprocessSandbox",
    "run_sandboxed",
    "scrubbed_env",
]

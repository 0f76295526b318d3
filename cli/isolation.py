"""How `sia run` and `sia resume` guard the sandbox: refuse to run generated code unisolated
unless waived (then a banner), record the weakest isolation level a run used, sweep what a
killed earlier process left, and turn SIGTERM and SIGHUP into a clean exit."""

from __future__ import annotations

import signal

from rich.markup import escape

from sia.checkpoints.paths import RunPaths
from sia.cli.common import CLIError
from sia.cli.render import err_console
from sia.files import write_json_atomic

ISOLATION_ORDER = ("unsafe", "bwrap", "bwrap+cgroups")  # weakest first


def isolation_or_refuse(cfg) -> str:
    """The sandbox's isolation level here; CLIError (naming both fixes) where generated code
    cannot be isolated and the user did not pass --unsafe-sandbox."""
    from sia.sandbox.runner import SandboxUnavailable, isolation_level

    try:
        return isolation_level(cfg.sandbox)
    except SandboxUnavailable as exc:
        raise CLIError(str(exc)) from None


def check_isolation(paths: RunPaths, cfg) -> None:
    """Refuse to run generated code unisolated unless waived (then a banner), record the weakest
    level this run has used, and sweep the sandboxes a killed earlier process of it left."""
    from sia.sandbox.boxes import sweep
    from sia.sandbox.runner import UNSAFE_BANNER

    level = isolation_or_refuse(cfg)
    if level == "unsafe":
        err_console.print(f"[bold red]{escape(UNSAFE_BANNER)}[/]")
    before = paths.recorded_isolation()
    if before not in ISOLATION_ORDER or ISOLATION_ORDER.index(level) < ISOLATION_ORDER.index(before):
        write_json_atomic(paths.isolation, {"isolation": level})
    if swept := sweep(paths.sandboxes):
        err_console.print(f"[yellow]swept {swept} sandbox(es) or scratch folder(s) a killed earlier process of "
                          f"this run left behind[/]")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled like Ctrl-C, so every sandbox is killed and freed on the way out."""


def handle_termination_signals() -> dict:
    """Turn SIGTERM and SIGHUP (SIGINT already is KeyboardInterrupt) into `Terminated` in the main
    thread, so `finally` blocks (the sandbox's cleanup) run before the process exits. Returns
    the previous handlers (for `signal.signal` to restore)."""
    def terminate(signum, frame):
        raise Terminated(signal.Signals(signum).name)

    handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: terminate, signal.SIGHUP: terminate}
    return {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}


def with_unsafe_sandbox(cfg, args):
    if getattr(args, "unsafe_sandbox", False):
        return cfg.model_copy(update={"sandbox": cfg.sandbox.model_copy(update={"allow_unsafe": True})})
    return cfg

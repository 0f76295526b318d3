"""Creating and driving one run, shared by `sia run`, `sia resume` and `sia compare` (which drives
its arms one after another in one process): the run config a command line asks for, a new run
folder's files, whether a checkpoint is finished, and `drive`, which streams the graph under the
sandbox guard with the live view and turns Ctrl-C or a failure into one message saying how to
continue."""

from __future__ import annotations

import importlib
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape

from sia.checkpoints.paths import RunPaths
from sia.cli.budget import PAUSED_EXIT
from sia.cli.common import CLIError
from sia.cli.isolation import check_isolation, handle_termination_signals, with_unsafe_sandbox
from sia.cli.render import LiveView, console, err_console, report
from sia.files import write_json_atomic

PID_FILE = "sia.pid"  # present while a `sia run`/`resume`/`compare` process drives the run


def default_runs_dir() -> Path:
    from sia.config import RunConfig

    try:
        return RunConfig.from_env().runs_dir
    except Exception:
        return Path(os.environ.get("SIA_RUNS_DIR", "runs"))


def task_argument(task: str | None, task_dir: str | None) -> str:
    """The task a `--task NAME` or `--task-dir PATH` names (a folder as an absolute path), checked."""
    from sia.tasks.base import TaskError
    from sia.tasks.registry import resolve_task

    if task_dir is not None:
        if not Path(task_dir).is_dir():
            raise CLIError(f"--task-dir {task_dir}: no such directory.")
        task = str(Path(task_dir).resolve())
    try:
        resolve_task(task)
    except TaskError as exc:
        raise CLIError(str(exc)) from None
    return task


def config_argument(config_file: str | None, runs_dir: str | None, args):
    """The RunConfig of `--config FILE` (else defaults + $SIA_CONFIG), `--runs-dir`, `--checkpointer`
    and `--unsafe-sandbox`."""
    from sia.checkpoints.saver import holds_password
    from sia.config import RunConfig

    try:
        cfg = RunConfig.load(Path(config_file)) if config_file else RunConfig.from_env()
    except (OSError, ValueError) as exc:
        raise CLIError(f"could not read the run config: {exc}") from None
    if runs_dir:
        cfg = cfg.model_copy(update={"runs_dir": Path(runs_dir)})
    if getattr(args, "checkpointer", None):  # `sia run --checkpointer URL`
        cfg = cfg.model_copy(update={"checkpointer": args.checkpointer})
    if cfg.checkpointer and holds_password(cfg.checkpointer):  # written into every new run's config.json
        err_console.print("[yellow]warning:[/] the checkpointer URL holds a password, which the run's config.json "
                          "keeps in plain text; prefer PGPASSWORD or ~/.pgpass.")
    return with_unsafe_sandbox(cfg, args)


def write_run(paths: RunPaths, cfg, inputs) -> None:
    """A new run's folder with its config.json and inputs.json (what `sia resume` reads back)."""
    paths.create()
    write_json_atomic(paths.config, cfg.model_dump(mode="json"))
    write_json_atomic(paths.inputs, inputs.model_dump(mode="json"))


def read_run(paths: RunPaths, args):
    """(config, inputs or None) of an existing run folder, as `sia resume` continues it."""
    from sia.config import RunConfig
    from sia.graph.state import SIAInput

    if not paths.config.exists():
        raise CLIError(f"{paths.config} is missing: this folder was not started by `sia run` and cannot be resumed.")
    try:
        cfg = with_unsafe_sandbox(RunConfig.load(paths.config).model_copy(update={"runs_dir": paths.runs_dir}), args)
        inputs = SIAInput.model_validate_json(paths.inputs.read_text()) if paths.inputs.exists() else None
    except (OSError, ValueError) as exc:
        raise CLIError(f"could not read run '{paths.run_id}': {exc}") from None
    return cfg, inputs


@contextmanager
def run_graph(paths: RunPaths):
    """The compiled loop on this run's checkpoints, in the checkpointer its config.json names
    (SQLite in the run folder, or a Postgres database); closed afterwards (a process driving many
    runs would otherwise keep one connection per run open)."""
    from sia.checkpoints.saver import CheckpointerError, configured_checkpointer, open_checkpointer
    from sia.graph.graph import build_graph

    try:
        with open_checkpointer(paths, configured_checkpointer(paths)) as saver:
            yield build_graph(saver)
    except CheckpointerError as exc:  # raised on opening: a bad URL, a server down
        raise CLIError(str(exc)) from None


def thread_of(paths: RunPaths) -> dict:
    return {"configurable": {"thread_id": paths.run_id}}


def is_finished(paths: RunPaths) -> bool:
    """Whether the run's checkpoint has reached the end of the loop (what `drive` would only report)."""
    from sia.checkpoints.saver import configured_checkpointer, has_checkpoints

    if not has_checkpoints(paths, configured_checkpointer(paths)):
        return False
    with run_graph(paths) as graph:
        snap = graph.get_state(thread_of(paths))
    return bool(snap.values) and not snap.next


def drive(paths: RunPaths, cfg, inputs, start_node: str | None, resume_cmd: str, title: str | None = None) -> int:
    """Stream the graph for this run (fresh when `inputs` and no checkpoint, else from its checkpoint).
    0: the run reached its end; 3 (PAUSED_EXIT): a budget paused it; 130: interrupted; 1: it stopped on an error. Either message names
    the run (`title`, default "Run ID") and says to continue with `resume_cmd`."""
    previous = handle_termination_signals()
    try:
        return _drive(paths, cfg, inputs, start_node, resume_cmd, title or f"Run {paths.run_id}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _drive(paths: RunPaths, cfg, inputs, start_node: str | None, resume_cmd: str, title: str) -> int:
    from sia.sandbox.live import allow_new_sandboxes

    allow_new_sandboxes()  # a drive after an interrupted one (in the same process) may start agents again
    check_isolation(paths, cfg)
    with console.status("loading the loop (torch, langgraph)…"):
        importlib.import_module("sia.graph.graph")  # the slow import, under the spinner
        from sia.graph.context import RunContext
    with run_graph(paths) as graph:
        return _stream(graph, paths, inputs, start_node, resume_cmd, title, RunContext(config=cfg))


def _stream(graph, paths: RunPaths, inputs, start_node, resume_cmd: str, title: str, context) -> int:
    thread = thread_of(paths)
    snap = graph.get_state(thread)
    payload = inputs
    if snap.values:
        if not snap.next:
            console.print(f"{escape(title)} already finished.")
            return finish_report(paths, snap.values, None)
        payload, start_node = None, snap.next[0]
        console.print(f"Resuming {escape(paths.run_id)} at [cyan]{escape(start_node)}[/] "
                      f"(generation {snap.values.get('generation', 0)}).")
    elif inputs is None:
        raise CLIError(f"run '{paths.run_id}' has no checkpoint and no inputs.json: start it again with `sia run`.")
    pid_file = paths.root / PID_FILE
    pid_file.write_text(str(os.getpid()))
    started = time.monotonic()
    view = LiveView(paths.run_id, graph.builder, start_node or "meta", (snap.values or {}).get("generation", 0))
    try:
        with view:
            for ns, mode, chunk in graph.stream(payload, thread, context=context,
                                                stream_mode=["updates", "custom"], subgraphs=True):
                view.handle(ns, mode, chunk)
    except KeyboardInterrupt:
        from sia.sandbox.live import kill_live_sandboxes

        kill_live_sandboxes()  # a sandbox running in a worker thread ends now, and cleans up there
        err_console.print(f"[yellow]Interrupted:[/] {escape(title)}, generation {view.gen} ({view.node}). Checkpoints "
                          f"are kept in {escape(str(paths.root))}; continue with `{escape(resume_cmd)}`.")
        return 130
    except Exception as exc:  # noqa: BLE001 - one readable paragraph instead of a traceback
        err_console.print(f"[red]{escape(title)} stopped[/] in generation {view.gen} "
                          f"({escape(str(view.node))}): {type(exc).__name__}: {escape(str(exc))}. "
                          f"Its checkpoints and logs are in {escape(str(paths.root))}; after fixing the cause, "
                          f"continue with `{escape(resume_cmd)}`.")
        return 1
    finally:
        pid_file.unlink(missing_ok=True)
    snap = graph.get_state(thread)
    if snap.next:  # a budget paused it (nodes/budget.py): not finished, resumable
        why = next((i.value.get("budget") for i in getattr(snap, "interrupts", ()) if isinstance(i.value, dict)), None)
        err_console.print(f"[yellow]Paused:[/] {escape(title)} after generation {view.gen}: {escape(str(why))}. "
                          f"Checkpoints are kept in {escape(str(paths.root))}; continue with "
                          f"`{escape(resume_cmd)}` and a larger limit (e.g. --max-wall, --max-tokens, --max-usd).")
        report(paths.run_id, _rows(snap.values), snap.values.get("errors") or [], paths.root, time.monotonic() - started)
        return PAUSED_EXIT
    return finish_report(paths, snap.values, time.monotonic() - started)


def resume_hint(paths: RunPaths, runs_dir: str | None) -> str:
    return f"sia resume {paths.run_id}" + (f" --runs-dir {runs_dir}" if runs_dir else "")


def _rows(values: dict) -> list[dict]:
    return [h.model_dump() if hasattr(h, "model_dump") else dict(h) for h in values.get("history") or []]


def finish_report(paths: RunPaths, values: dict, loop_s: float | None) -> int:
    report(paths.run_id, _rows(values), values.get("errors") or [], paths.root, loop_s)
    return 0

"""`sia`: run, resume, list and inspect SIA loop runs, or serve the embedded model.

    sia run --task lawbench-mini --generations 4 --policy alternate
    sia resume RUN [--max-wall S]   sia runs        sia show RUN        sia serve --port 8000
    sia compare --task lawbench-mini --policies scaffold-only,llm --seeds 3
    sia transfer RUN [--task OTHER]   (a run's incumbents on a task it never trained or selected on)
    sia report RUN [-o report.html]   (one self-contained HTML file of a run)
    sia web [--port 8765]             (a live dashboard of every run, on 127.0.0.1)
    sia tasks list        sia eval --task NAME --submission FILE [--split test]

Heavy imports (torch, the graph) happen inside the commands that need them, so `--help`,
`runs` and `show` answer at once."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import get_args

from rich.markup import escape

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.cli.budget import add_budget_arguments, budget_flags, save_budget, with_budget
from sia.cli.common import CLIError
from sia.cli.driving import (PID_FILE, config_argument, default_runs_dir, drive, read_run, resume_hint,
                             task_argument, write_run)
from sia.cli.isolation import isolation_or_refuse
from sia.cli.render import ServeLog, console, err_console, generations_table, runs_table, verdict_table
from sia.files import read_json
from sia.graph.state import Policy
from sia.precision import PRECISIONS
from sia.transfer_table import read_transfers


class Parser(argparse.ArgumentParser):
    """argparse with its help and errors printed through rich."""

    def _print_message(self, message, file=None):
        if message:
            (err_console if file is sys.stderr else console).print(message, end="", markup=False,
                                                                   highlight=False, soft_wrap=True)

    def error(self, message):
        self.print_usage(sys.stderr)
        err_console.print(f"[red]error:[/] {escape(message)}")
        self.exit(2)


def run_paths(args) -> RunPaths:
    return RunPaths(Path(args.runs_dir or default_runs_dir()), args.run)


def existing_run(args) -> RunPaths:
    paths = run_paths(args)
    if not paths.root.is_dir():
        known = ", ".join(sorted(p.name for p in paths.root.parent.glob("*") if p.is_dir())[:10]) or "none"
        raise CLIError(f"no run '{args.run}' in {paths.runs_dir} (runs there: {known}); "
                       f"pass --runs-dir if it lives elsewhere.")
    return paths


# ---- reading a run folder without the graph or the model ----

def checkpoint_values(paths: RunPaths) -> dict:
    """The latest top-level checkpoint's channel values, from the checkpointer the run's
    config.json names ({} when there is none, or when its database cannot be read: a warning
    says why, and the run is listed all the same)."""
    from sia.checkpoints.saver import CheckpointerError, configured_checkpointer, has_checkpoints, open_checkpointer

    url = configured_checkpointer(paths)
    if not has_checkpoints(paths, url):
        return {}
    try:
        with open_checkpointer(paths, url) as saver:
            tup = saver.get_tuple({"configurable": {"thread_id": paths.run_id, "checkpoint_ns": ""}})
            return dict(tup.checkpoint.get("channel_values") or {}) if tup else {}
    except CheckpointerError as exc:
        err_console.print(f"[yellow]warning:[/] run '{escape(paths.run_id)}': {escape(str(exc))}")
        return {}
    except Exception:
        return {}


def run_status(paths: RunPaths) -> str:
    try:
        pid = int((paths.root / PID_FILE).read_text())
        if pid != os.getpid():
            os.kill(pid, 0)
            return "running"
    except (OSError, ValueError):
        pass
    if paths.paused.exists():
        return "paused"
    return "finished" if (paths.root / "summary.json").exists() else "interrupted"


def run_row(paths: RunPaths) -> dict:
    inputs = read_json(paths.inputs) or read_json(paths.root / "summary.json")
    if not inputs.get("task"):
        inputs = {**checkpoint_values(paths), **inputs}
    gens = RunDB.read_generations(paths.run_db, paths.run_id)  # only reads: creates no run.db
    tests = [g["test"] for g in gens if g.get("test") is not None]
    accepted = [g["selection"] for g in gens if g.get("accepted") and g.get("selection") is not None]
    return {"id": paths.run_id, "task": inputs.get("task"), "policy": inputs.get("policy"), "done": len(gens),
            "max": inputs.get("max_generations"), "best": max(accepted, default=None),
            "first_test": tests[0] if tests else None, "last_test": tests[-1] if tests else None,
            "status": run_status(paths), "isolation": paths.recorded_isolation()}


# ---- commands ----

def cmd_runs(args) -> int:
    runs_dir = Path(args.runs_dir or default_runs_dir())
    dirs = sorted((p for p in runs_dir.glob("*") if p.is_dir() and any(
        (p / f).exists() for f in ("config.json", "run.db", "checkpoints.sqlite"))), key=lambda p: p.stat().st_mtime)
    if not dirs:
        console.print(f"No runs in {escape(str(runs_dir))}. Start one with `sia run --task lawbench-mini`.")
        return 0
    console.print(runs_table([run_row(RunPaths(runs_dir, p.name)) for p in dirs], runs_dir))
    return 0


def cmd_show(args) -> int:
    paths = existing_run(args)
    row = run_row(paths)
    status = row["status"]
    if status == "paused":  # which limit, and how to go on
        status += f" ({paths.paused_reason()}; `sia resume {paths.run_id}` with a larger limit)"
    console.print(f"[bold]{escape(paths.run_id)}[/] · task {escape(str(row['task']))} · policy "
                  f"{escape(str(row['policy']))} · {escape(status)} · {escape(str(paths.root))}")
    gens = RunDB.read_generations(paths.run_db, paths.run_id)  # only reads: creates no run.db
    console.print(generations_table(gens) if gens else "[dim]No generation has been scored yet.[/]")
    if verdicts := verdict_table(gens, read_transfers(paths.root)):
        console.print(verdicts)
    errors = checkpoint_values(paths).get("errors") or read_json(paths.root / "summary.json").get("errors") or []
    for err in errors:
        console.print(f"[yellow]error:[/] {escape(str(err))}")
    return 0


def cmd_run(args) -> int:
    from sia.graph.state import SIAInput

    task = task_argument(args.task, args.task_dir)
    cfg = with_budget(config_argument(args.config, args.runs_dir, args), args)
    isolation_or_refuse(cfg)  # before the run folder exists, so a retry can use the same --run-id
    run_id = args.run_id or f"{Path(task).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        inputs = SIAInput(run_id=run_id, task=task, max_generations=args.generations, policy=args.policy,
                          target_score=args.target_score, limit=args.limit)
    except ValueError as exc:
        raise CLIError(f"invalid run inputs: {exc}") from None
    paths = RunPaths(cfg.runs_dir, run_id)
    if paths.root.exists():
        raise CLIError(f"run '{run_id}' already exists in {cfg.runs_dir}. Continue it with `sia resume {run_id}`"
                       + (f" --runs-dir {args.runs_dir}" if args.runs_dir else "") + ", or pick another --run-id.")
    write_run(paths, cfg, inputs)
    console.print(f"[bold]sia run[/] {escape(run_id)} · task {escape(task)} · policy {inputs.policy} · "
                  f"{inputs.max_generations} generation{'s' * (inputs.max_generations != 1)}" + (f" · limit {inputs.limit}" if inputs.limit else "")
                  + f" · {escape(str(paths.root))}")
    return drive(paths, cfg, inputs, "meta", resume_hint(paths, args.runs_dir))


def cmd_resume(args) -> int:
    paths = existing_run(args)
    cfg, inputs = read_run(paths, args)
    if budget_flags(args):
        cfg = with_budget(cfg, args)
        save_budget(paths.config, cfg)  # the next resume keeps the new limits
    return drive(paths, cfg, inputs, None, resume_hint(paths, args.runs_dir))


def cmd_serve(args) -> int:
    if args.adapter and not (Path(args.adapter) / "adapter_config.json").exists():
        raise CLIError(f"--adapter {args.adapter}: no adapter_config.json there (pass a trained LoRA adapter folder).")
    if args.adapter and args.runtime_lora:
        raise CLIError("--adapter merges one adapter for good; with --runtime-lora load adapters by name instead.")
    with console.status("loading the embedded model…"):
        from sia.gateway.engine import Engine
        from sia.config import EMBEDDED_MODEL_NAME
        from sia.gateway.runtime_adapters import RuntimeAdapters
        from sia.gateway.server import CallScope, Gateway

        def load(adapter: Path | None):
            return Engine.load(EMBEDDED_MODEL_NAME, adapter=adapter, precision=args.precision)

        runtime = RuntimeAdapters(load) if args.runtime_lora else None
        engines = []
        try:  # bind first, so a taken port fails before the model loads
            gw = Gateway(runtime.backend_for if runtime else lambda adapter: engines[0], ServeLog(), port=args.port,
                         model_name=EMBEDDED_MODEL_NAME, runtime_adapters=runtime)
        except OSError as exc:
            raise CLIError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}; pick another --port.") from None
        if runtime:
            runtime.backend_for(None)  # the base model, loaded now rather than on the first request
        else:
            engines.append(load(Path(args.adapter) if args.adapter else None))
    gw.start()
    token = gw.issue_token(CallScope("serve", 0, None, purpose="serve"), quotas=False, admin=args.runtime_lora)
    lora = ("\n  LoRA      POST /v1/load_lora_adapter {lora_name, lora_path} with this key, then name the adapter "
            "as the request's model (as vLLM does)") if runtime else ""
    console.print(f"Serving [bold]{EMBEDDED_MODEL_NAME}[/]" + (f" + adapter {escape(args.adapter)}" if args.adapter else "")
                  + f"\n  base URL  [bold]{gw.base_url}[/]\n  API key   [bold]{token}[/]  (valid until this process "
                  "stops)\n  Point any OpenAI client at them (OPENAI_BASE_URL, OPENAI_API_KEY). Ctrl-C stops." + lora)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or kill from a script
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    gw.stop()
    console.print("Stopped.")
    return 0


def checkpointer_url(text: str) -> str:
    """`--checkpointer`'s value, checked before the run folder exists (the server is reached later)."""
    from sia.checkpoints.saver import is_postgres_url, masked

    if not is_postgres_url(text):
        raise argparse.ArgumentTypeError(f"{masked(text)!r} is not a postgresql:// URL "
                                         "(e.g. postgresql://sia@db.example:5432/sia)")
    return text


def build_parser() -> Parser:
    parser = Parser(prog="sia", description="Self-improving agent loop: rewrite the task agent's scaffold or "
                                            "fine-tune the target model, keeping what scores best.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runs_dir = dict(metavar="DIR", help="folder of run folders (default: runs, or $SIA_RUNS_DIR)")
    unsafe = ("run generated code even where it cannot be isolated (no root or no bubblewrap): rlimits only, "
              "it reads what you can read; the run is marked unsafe")

    p = sub.add_parser("run", help="start a new run", description="Start a new run and show its progress.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", metavar="NAME", help="built-in task name (lawbench-mini)")
    src.add_argument("--task-dir", metavar="PATH", help="a task folder (task.md, data/, reference/)")
    p.add_argument("--generations", type=int, default=4, metavar="N", help="stop after N generations (default 4)")
    p.add_argument("--policy", choices=get_args(Policy), default="llm", help="lever policy (default llm)")
    p.add_argument("--run-id", metavar="ID", help="run folder name (default TASK-DATE-TIME)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N items per split (quick runs)")
    p.add_argument("--target-score", type=float, metavar="X", help="stop once the selection score reaches X")
    p.add_argument("--config", metavar="FILE.json", help="a RunConfig JSON file (default: defaults + $SIA_CONFIG)")
    p.add_argument("--runs-dir", **runs_dir)
    p.add_argument("--unsafe-sandbox", action="store_true", help=unsafe)
    p.add_argument("--checkpointer", metavar="URL", type=checkpointer_url,
                   help="keep LangGraph's checkpoints in this Postgres database (postgresql://USER@HOST:PORT/DB; "
                        "a password goes in PGPASSWORD or ~/.pgpass) instead of the run folder's SQLite file")
    add_budget_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue a stopped or paused run",
                       description="Continue a run from its last checkpoint; a budget flag replaces that limit "
                                   "in the run's config.json (how a paused run goes on).")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--runs-dir", **runs_dir)
    p.add_argument("--unsafe-sandbox", action="store_true", help=unsafe)
    add_budget_arguments(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("runs", help="list runs", description="List runs with their scores and status.")
    p.add_argument("--runs-dir", **runs_dir)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="show a run's generations", description="Show a run's per-generation table.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--runs-dir", **runs_dir)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("serve", help="serve the embedded model (OpenAI-compatible)",
                       description="Serve the embedded model on 127.0.0.1 with a per-session API key, until Ctrl-C.")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--adapter", metavar="DIR", help="a trained LoRA adapter folder to merge in")
    p.add_argument("--runtime-lora", action="store_true",
                   help="load and unload LoRA adapters by name while serving, with vLLM's endpoints "
                        "(/v1/load_lora_adapter, /v1/unload_lora_adapter; requests name the adapter as model)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="dtype the model is served in (auto: bf16 where the hardware has bf16 matmuls)")
    p.set_defaults(func=cmd_serve)

    from sia.cli.compare import add_command as add_compare
    from sia.cli.tasks import add_commands
    from sia.cli.report import add_command as add_report
    from sia.cli.transfer import add_command as add_transfer
    from sia.cli.web import add_command as add_web

    add_compare(sub, runs_dir, unsafe)
    add_transfer(sub, runs_dir, unsafe)
    add_report(sub, runs_dir)
    add_web(sub, runs_dir)
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        return 130


if __name__ == "__main__":
    sys.exit(main())

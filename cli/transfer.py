"""`sia transfer`: score a finished (or stopped) run's successive incumbents on a related task it
never trained or selected on, and report each change with its paired bootstrap interval beside the
first-to-final change on the run's own test split (`nodes.transfer`, `sia.transfer_table`).

    sia transfer RUN                          (the run task's declared transfer sets)
    sia transfer RUN --task lawbench-mini-b [--split test] [--limit N]
    sia transfer RUN --task-dir path/to/task

Writes runs/RUN/transfer/NAME.json, NAME.md and NAME_items.jsonl (read them back with
`sia.transfer_table.read_transfers`). Running it again recomputes and replaces them; an
interrupted check leaves the previous files as they were.
"""

from __future__ import annotations

import signal
from pathlib import Path

from rich import box
from rich.markup import escape
from rich.table import Table

from sia.cli.common import CLIError
from sia.cli.driving import read_run, task_argument
from sia.cli.isolation import handle_termination_signals, isolation_or_refuse
from sia.cli.render import console, err_console
from sia.compare_table import fmt
from sia.files import read_json
from sia.tasks.base import SPLITS
from sia.transfer_table import FOLDER, file_stem, fmt_change


def verdict_text(verdict: str | None) -> str:
    if not verdict:
        return ""
    colour = "green" if verdict in ("transferred", "gain on the task") else "red" if verdict.startswith("loss") else "dim"
    return f"[{colour}]{escape(verdict)}[/]"


def transfer_tables(report: dict) -> list:
    """Rich renderables of a report: each incumbent's score and change, then first → final beside the own task."""
    pct = f"{report['confidence']:.0%}"
    metric = f" ({report['metric']})" if report.get("metric") else ""
    table = Table(title=f"Transfer of {report['run_id']} to {report['task']}{metric}: {report['n']} {report['split']} "
                        "items", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    for name, justify in [("gen", "right"), ("lever", "left"), ("adapter", "left"), ("transfer score", "right"),
                          (f"Δ from previous [{pct} CI]", "right"), ("verdict", "left"), ("own test", "right")]:
        table.add_column(escape(name), justify=justify)
    by_to = {ch["to"]: ch for ch in report["changes"]}
    for inc in report["incumbents"]:
        ch = by_to.get(inc["generation"]) or {}
        table.add_row(str(inc["generation"]), inc["lever"], escape(inc["adapter"] or "base"), fmt(inc["score"]),
                      fmt_change(ch), verdict_text(ch.get("verdict")), fmt(inc.get("own_test")))
    out = [table]
    ftf, own = report.get("first_to_final"), report.get("own_task")
    if not ftf:
        return out + ["[dim]One incumbent only: no change to report.[/]"]
    side = Table(title=f"First → final incumbent (gen {ftf['from']} → {ftf['to']})", title_justify="left",
                 header_style="bold", box=box.SIMPLE_HEAD)
    for name, justify in [("on", "left"), ("items", "right"), (f"Δ [{pct} CI]", "right"), ("verdict", "left")]:
        side.add_column(escape(name), justify=justify)
    side.add_row(f"transfer: {escape(report['task'])} ({report['split']})", str(ftf["n"]), fmt_change(ftf),
                 verdict_text(ftf.get("verdict")))
    side.add_row(f"the task: {escape(str(report['run_task']))} (test)", str((own or {}).get("n") or ""),
                 fmt_change(own) or "[dim]no stored test results[/]", verdict_text((own or {}).get("verdict")))
    return out + [side]


def run_task_of(paths, inputs):
    """(reference, resolved task or None) of the run's own task: the name or folder it was run on."""
    from sia.tasks.base import TaskError
    from sia.tasks.registry import resolve_task

    ref = inputs.task if inputs is not None else read_json(paths.root / "summary.json").get("task")
    if not ref:
        return None, None
    try:
        return ref, resolve_task(ref)
    except TaskError:  # e.g. a task folder since removed: an explicit --task still works
        return ref, None


def transfer_tasks(args, run_ref: str | None, run_task) -> list:
    """The tasks to score on: --task/--task-dir, else the run task's declared transfer sets; checked."""
    from sia.nodes.transfer import declared_transfers
    from sia.tasks.base import TaskError
    from sia.tasks.registry import resolve_task

    if args.task or args.task_dir:
        refs = [task_argument(args.task, args.task_dir)]
    elif run_task is None:
        raise CLIError(f"run '{args.run}': its task {run_ref or '(unknown)'} cannot be loaded, so its transfer sets are "
                       "unknown; pass --task NAME or --task-dir PATH.")
    elif not (refs := declared_transfers(run_task)):
        raise CLIError(f"task '{run_task.name}' declares no transfer tasks (transfer_tasks in its sia_task.json); "
                       "pass --task NAME or --task-dir PATH.")
    tasks = []
    for ref in refs:
        try:
            other = resolve_task(ref)
        except TaskError as exc:
            raise CLIError(f"transfer task {ref}: {exc}") from None
        own_name = run_task.name if run_task is not None else Path(run_ref or "").name
        if other.name == own_name or (run_task is not None and Path(other.root).resolve() == Path(run_task.root).resolve()):
            raise CLIError(f"transfer task '{other.name}' is the run's own task; a transfer check needs a task the run "
                           "never trained or selected on: pass another --task or --task-dir.")
        tasks.append(other)
    return tasks


def cmd_transfer(args) -> int:
    from sia.cli.main import existing_run, run_status
    from sia.nodes.transfer import incumbents_of

    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit must be at least 1.")
    paths = existing_run(args)
    if run_status(paths) == "running":
        raise CLIError(f"run '{paths.run_id}' is being driven by another process; wait for it to finish or stop it first.")
    if not incumbents_of(paths):
        raise CLIError(f"run '{paths.run_id}' has no accepted generation yet, so no incumbent to transfer; let it finish "
                       f"first (`sia resume {paths.run_id}`).")
    cfg, inputs = read_run(paths, args)
    run_ref, run_task = run_task_of(paths, inputs)
    others = transfer_tasks(args, run_ref, run_task)
    if isolation_or_refuse(cfg) == "unsafe":
        from sia.sandbox.runner import UNSAFE_BANNER

        err_console.print(f"[bold red]{escape(UNSAFE_BANNER)}[/]")
    return check(paths, cfg, run_task.name if run_task is not None else Path(run_ref or "?").name, others, args)


def check(paths, cfg, run_task_name: str, others: list, args) -> int:
    """Score on each task in turn with the run's services; Ctrl-C or SIGTERM kills the sandboxes
    and keeps what earlier reports were written (each one is written whole or not at all)."""
    import sia.nodes.services as services  # through the module: tests put fake services there
    from sia.nodes.evaluation import EvaluationInterrupted, ProtectedFilesChanged
    from sia.nodes.transfer import TransferError, transfer_check
    from sia.sandbox.boxes import sweep
    from sia.sandbox.live import allow_new_sandboxes, kill_live_sandboxes

    sweep(paths.sandboxes)  # what a killed earlier process of this run left (the run is not running)
    allow_new_sandboxes()
    previous = handle_termination_signals()
    name = others[0].name
    try:
        with console.status("loading the run's services…") as status:
            svc = services.services_for(cfg, paths.run_id)
            for other in others:
                name = other.name
                report = transfer_check(svc, run_task_name, other, args.split, args.limit,
                                        on_progress=lambda text: status.update(escape(text)))
                for renderable in transfer_tables(report):
                    console.print(renderable)
                folder = paths.root / FOLDER
                console.print(f"Written: {escape(str(folder / file_stem(name)))}.json, .md and _items.jsonl")
    except (KeyboardInterrupt, EvaluationInterrupted):
        kill_live_sandboxes()
        err_console.print(f"[yellow]Interrupted:[/] the transfer check of {escape(paths.run_id)} on {escape(name)} "
                          "wrote nothing (earlier reports are complete); run the same command again.")
        return 130
    except TransferError as exc:
        raise CLIError(str(exc)) from None
    except ProtectedFilesChanged as exc:
        raise CLIError(f"the transfer check on {name} is void: {exc}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        services.release_services(cfg, paths.run_id)
    return 0


def add_command(sub, runs_dir: dict, unsafe: str) -> None:
    p = sub.add_parser("transfer", help="score a run's incumbents on a related task (transfer check)",
                       description="Score each incumbent of a finished or stopped run (every accepted generation, "
                                   "scaffold and adapter together) on a related task the run never trained or "
                                   "selected on, and report each change with its paired bootstrap interval beside "
                                   "the first-to-final change on the run's own test split. Without --task: the "
                                   "transfer sets the run's task declares. Writes runs/RUN/transfer/.")
    p.add_argument("run", metavar="RUN")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--task", metavar="NAME", help="a built-in or prepared task name (e.g. lawbench-mini-b)")
    src.add_argument("--task-dir", metavar="PATH", help="a task folder")
    p.add_argument("--split", choices=SPLITS, default="test", help="the transfer task's split to score (default test)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N items (quick checks)")
    p.add_argument("--runs-dir", **runs_dir)
    p.add_argument("--unsafe-sandbox", action="store_true", help=unsafe.replace("the run is", "the report is"))
    p.set_defaults(func=cmd_transfer)

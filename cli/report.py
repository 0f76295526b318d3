"""`sia report RUN [-o report.html]`: one self-contained HTML file of a run (`sia.report_html`),
built from the run folder alone (run.db, each generation's files, adapters, transfers, timings):
no model, no graph, no network. Works on a finished, stopped or running run.

    sia report demo-guards                 (writes runs/demo-guards/report.html)
    sia report demo-guards -o /tmp/demo.html
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.cli.common import CLIError
from sia.cli.render import console
from sia.compare_table import bootstrap_ci
from sia.files import read_json, read_jsonl, write_text_atomic
from sia.report_html import render
from sia.tasks.base import SPLITS
from sia.transfer_table import read_transfers


def split_intervals(paths: RunPaths, generations: list[dict]) -> dict[tuple[int, str], tuple[float, float]]:
    """(generation, split) -> the 95% percentile bootstrap interval of its mean item score, where
    run.db holds its items (a split scored as one number, or not stored, gets none)."""
    out = {}
    for g in generations:
        for split in SPLITS:
            if g.get(split) is None:
                continue
            scores = RunDB.read_item_scores(paths.run_db, paths.run_id, g["scaffold_sha"], g.get("adapter"), split)
            values = list(scores.values())
            if len(values) > 1 and len(set(values)) > 1:
                out[(g["generation"], split)] = bootstrap_ci(values, resamples=2000)
    return out


def gather(paths: RunPaths) -> dict:
    """Everything the page shows, read from the run folder."""
    from sia.cli.main import run_row

    row = run_row(paths)
    gens = RunDB.read_generations(paths.run_db, paths.run_id)
    details = {}
    for g in gens:
        folder = paths.gen(g["generation"])
        rationale = next((text for name in ("improvement.md", "feedback.md")
                          if (text := _read(folder / name))), g.get("note") or "")
        details[g["generation"]] = {"rationale": rationale, "diff": _read(folder / "diff.patch")}
    adapters = []
    for folder in sorted((paths.root / "adapters").glob("gen_*"), key=lambda p: int(p.name.split("_")[1])):
        summary = read_json(folder / "train_summary.json")
        if summary:
            adapters.append({"version": f"adapters/{folder.name}", "summary": summary,
                             "losses": summary.get("loss_history") or []})
    return {"run_id": paths.run_id, "task": row.get("task"), "policy": row.get("policy"), "status": row.get("status"),
            "isolation": row.get("isolation"), "generations": gens, "intervals": split_intervals(paths, gens),
            "transfers": read_transfers(paths.root), "details": details, "adapters": adapters,
            "timings": read_jsonl(paths.timings)}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cmd_report(args) -> int:
    from sia.cli.main import existing_run

    paths = existing_run(args)
    out = Path(args.output) if args.output else paths.root / "report.html"
    if out.is_dir():
        raise CLIError(f"-o {out}: a folder; name the HTML file to write, e.g. {out / 'report.html'}")
    if not out.parent.is_dir():
        raise CLIError(f"-o {out}: no folder {out.parent}; create it first or write elsewhere")
    write_text_atomic(out, render(gather(paths)))
    console.print(f"Report of {escape(paths.run_id)}: [bold]{escape(str(out))}[/] (self-contained: open it in any browser)")
    return 0


def add_command(sub, runs_dir: dict) -> None:
    p = sub.add_parser("report", help="write a run's self-contained HTML report",
                       description="One HTML file with the run's score chart, generations, lineage, verdicts, "
                                   "adapters' loss curves, diffs and timings; no network needed to open it.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write it (default runs/RUN/report.html)")
    p.add_argument("--runs-dir", **runs_dir)
    p.set_defaults(func=cmd_report)

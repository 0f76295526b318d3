"""finish: write the run's summary (summary.md and summary.json) beside its generations, with a
verdict on each accepted change (its guards, and its transfers once `sia transfer` has scored them)."""

from __future__ import annotations

from pathlib import Path

from langgraph.runtime import Runtime

from sia.checkpoints.paths import RunPaths
from sia.files import read_json, read_jsonl, write_json_atomic, write_text_atomic
from sia.graph.context import RunContext
from sia.graph.state import SIAState
from sia.nodes.services import services
from sia.spend_text import node_seconds, node_seconds_text, shows_cost, tokens_cell, usd_cell
from sia.transfer_table import read_transfers
from sia.verdicts import verdict_markdown


def time_table(timings: Path) -> str:
    """Markdown: seconds spent per generation in agent runs (by purpose and splits) and training,
    then per generation by graph node."""
    rows = read_jsonl(timings)
    runs = [r for r in rows if "purpose" in r]
    if not rows:
        return ""
    lines = ["", "## Where the time went", "", "| gen | what | items | seconds |", "|---|---|---|---|"]
    for r in runs:
        items = ", ".join(f"{k} {v}" for k, v in (r.get("items") or {}).items())
        lines.append(f"| {r.get('generation')} | {r.get('purpose')} | {items} | {r.get('wall_s')} |")
    total = sum(r.get("wall_s") or 0 for r in runs)
    lines += [f"| | total | | {total:.1f} |", ""]
    if by_gen := node_seconds(rows):
        lines += ["| gen | seconds by node |", "|---|---|"]
        lines += [f"| {gen} | {node_seconds_text(by_node)} |" for gen, by_node in sorted(by_gen.items())] + [""]
    return "\n".join(lines)


def finish(state: SIAState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    rows = [h.model_dump() for h in state.history]
    first = next((h for h in state.history if h.test is not None), None)
    inc = state.incumbent
    final = next((h for h in state.history if inc and h.generation == inc.generation), None)
    isolation = svc.paths.recorded_isolation()  # None without the CLI: see each *_sandbox.json
    write_json_atomic(svc.paths.root / "summary.json", {
        "run_id": state.run_id, "task": state.task, "policy": state.policy, "generations": rows,
        "incumbent_generation": inc.generation if inc else None, "incumbent_adapter": inc.adapter if inc else None,
        "first_test": first.test if first else None, "final_test": final.test if final else None,
        "flagged": state.flagged, "errors": state.errors, "isolation": isolation})
    write_summary_markdown(svc.paths)
    return {}


def write_summary_markdown(paths: RunPaths) -> None:
    """summary.md from summary.json, the run's transfer checks and timings.jsonl; `sia transfer`
    calls it again, so the verdict on each change includes the transfers scored after the run."""
    summary = read_json(paths.root / "summary.json")
    if not summary:
        return
    cost = shows_cost(summary["generations"])
    lines = ["| gen | lever | adapter | feedback | selection | test | accepted | guards | wall s | tokens |"
             + " usd |" * cost + " note |", "|---|---|---|---|---|---|---|---|---|---|" + "---|" * cost + "---|"]
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for h in summary["generations"]:
        lines.append(f"| {h['generation']} | {h['lever']} | {h['adapter'] or 'base'} | {fmt(h['feedback'])} | "
                     f"{fmt(h['selection'])} | {fmt(h['test'])} | {'yes' if h['accepted'] else 'no'} | "
                     f"{h.get('guards') or ''} | {h['wall_s']} | {tokens_cell(h.get('tokens'))} |"
                     + f" {usd_cell(h.get('usd'))} |" * cost + f" {h['note']} |")
    flag = f"**FLAGGED: {summary['flagged']}**\n\n" if summary.get("flagged") else ""
    if summary.get("isolation") == "unsafe":
        flag += "**UNSAFE SANDBOX: generated code ran without isolation; these scores are not protected.**\n\n"
    write_text_atomic(paths.root / "summary.md", f"# Run {summary['run_id']} on {summary['task']}\n\n{flag}"
                      + "\n".join(lines) + "\n" + verdict_markdown(summary["generations"], read_transfers(paths.root))
                      + time_table(paths.timings))

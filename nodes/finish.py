"""finish: write the run's summary (summary.md and summary.json) beside its generations."""

from __future__ import annotations

import json
from pathlib import Path

from langgraph.runtime import Runtime

from sia.files import write_json_atomic, write_text_atomic
from sia.graph.context import RunContext
from sia.graph.state import SIAState
from sia.nodes.services import services


def time_table(timings: Path) -> str:
    """Markdown: seconds spent per generation in agent runs (by purpose and splits) and training."""
    try:
        rows = [json.loads(line) for line in timings.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return ""
    if not rows:
        return ""
    lines = ["", "## Where the time went", "", "| gen | what | items | seconds |", "|---|---|---|---|"]
    for r in rows:
        items = ", ".join(f"{k} {v}" for k, v in (r.get("items") or {}).items())
        lines.append(f"| {r.get('generation')} | {r.get('purpose')} | {items} | {r.get('wall_s')} |")
    total = sum(r.get("wall_s") or 0 for r in rows)
    return "\n".join(lines + [f"| | total | | {total:.1f} |", ""])


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
    lines = ["| gen | lever | adapter | feedback | selection | test | accepted | wall s | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for h in state.history:
        lines.append(f"| {h.generation} | {h.lever} | {h.adapter or 'base'} | {fmt(h.feedback)} | {fmt(h.selection)} | "
                     f"{fmt(h.test)} | {'yes' if h.accepted else 'no'} | {h.wall_s} | {h.note} |")
    flag = f"**FLAGGED: {state.flagged}**\n\n" if state.flagged else ""
    if isolation == "unsafe":
        flag += "**UNSAFE SANDBOX: generated code ran without isolation; these scores are not protected.**\n\n"
    write_text_atomic(svc.paths.root / "summary.md", f"# Run {state.run_id} on {state.task}\n\n{flag}" + "\n".join(lines)
                      + "\n" + time_table(svc.paths.timings))
    return {}

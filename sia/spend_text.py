"""How a run's spend reads in every view (the terminal table, summary.md, `sia report`, `sia
web`): tokens and cost per generation as run.db's generation rows hold them (nodes/budget.py),
and seconds per node from timings.jsonl's node rows (nodes/progress.py). Pure text, no markup."""

from __future__ import annotations


def tokens_cell(tokens: dict | None) -> str:
    """A generation's tokens over all roles ('' for a run from before they were recorded)."""
    return "" if not isinstance(tokens, dict) else f"{sum(tokens.values()):,}"


def tokens_by_role(tokens: dict | None) -> str:
    """'meta 0 · feedback 120 · target 5,400'."""
    return "" if not isinstance(tokens, dict) else " · ".join(f"{role} {n:,}" for role, n in tokens.items())


def shows_cost(rows: list[dict]) -> bool:
    """Whether any generation cost money (else a column of zeros is noise)."""
    return any((r.get("usd") or 0) > 0 for r in rows)


def usd_cell(usd) -> str:
    return "" if usd is None else f"{float(usd):.4f}"


def node_seconds(timing_rows: list[dict]) -> dict[int, dict[str, float]]:
    """generation -> node -> seconds, from timings.jsonl's node rows (in the order nodes ran)."""
    out: dict[int, dict[str, float]] = {}
    for r in timing_rows:
        if "node" in r and isinstance(r.get("generation"), int):
            by_node = out.setdefault(r["generation"], {})
            by_node[r["node"]] = by_node.get(r["node"], 0.0) + float(r.get("wall_s") or 0)
    return out


def node_seconds_text(by_node: dict[str, float]) -> str:
    """'task 12.1 · feedback 0.3 · propose_scaffold 4.0' (the nodes that took under 0.05 s left out)."""
    return " · ".join(f"{node} {s:.1f}" for node, s in by_node.items() if s >= 0.05)

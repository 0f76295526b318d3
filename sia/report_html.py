"""`sia report`'s page: one self-contained HTML file of a run (no script, no stylesheet or font
from elsewhere: it opens offline and can be attached to an issue). Pure: a dict of the run's
records in (`cli.report.gather` builds it from the run folder), text out. Imports no component.

What it shows, top to bottom: the run's header; score by generation per split (an inline SVG:
filled markers accepted, hollow rejected, whiskers the 95% bootstrap interval of a split's mean
where it has per-item scores, a dashed step line the incumbent's selection score); the
per-generation table with keep-best's p-value and guards; the lineage (which incumbent each
candidate came from); the verdict on each accepted change with its transfers; each adapter's
loss curve; each generation's rationale and scaffold diff (collapsed); where the time went.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from sia.spend_text import node_seconds, shows_cost, tokens_by_role, usd_cell
from sia.verdicts import transfer_sentence, verdict_cells

SPLIT_COLOURS = {"feedback": "#1f77b4", "selection": "#d62728", "test": "#2ca02c"}
CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.7em;overflow-x:auto;font-size:12px}.yes{color:#1a7f37}.no{color:#999}
.blocked{color:#c00}summary{cursor:pointer;margin:.3em 0}svg text{font:11px system-ui,sans-serif}"""


def fmt(value, signed: bool = False) -> str:
    """A score as text ('' for none); a number stored as text (older run.db columns) is read as one."""
    if value is None or value == "":
        return ""
    value = float(value)
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """Cells are HTML already (escape before)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='n'>{c}</td>" if k in numeric else f"<td>{c}</td>"
                                    for k, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def score_chart(generations: list[dict], intervals: dict[tuple[int, str], tuple[float, float]],
                width: int = 720, height: int = 280) -> str:
    """Score by generation per split; `intervals` maps (generation, split) to a 95% interval."""
    points = [(g["generation"], s, g[s], bool(g.get("accepted"))) for g in generations for s in SPLIT_COLOURS
              if g.get(s) is not None]
    if not points:
        return "<p>No generation has been scored yet.</p>"
    values = [v for *_, v, _ in points] + [v for lo_hi in intervals.values() for v in lo_hi]
    lo, hi = min(0.0, min(values)), max(1.0, max(values))
    gens = [g["generation"] for g in generations]
    left, right, top, bottom = 48, 110, 14, 30

    def x(gen: int) -> float:
        span = max(1, max(gens) - min(gens))
        return left + (gen - min(gens)) / span * (width - left - right) if len(gens) > 1 else (width - right + left) / 2

    def y(value: float) -> float:
        return top + (hi - value) / (hi - lo) * (height - top - bottom)

    parts = [f"<svg width='{width}' height='{height}' role='img' "
             f"aria-label='score by generation'>"]
    for k in range(6):  # y grid and ticks
        v = lo + (hi - lo) * k / 5
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#eee'/>"
                     f"<text x='{left - 6}' y='{y(v) + 4:.1f}' text-anchor='end'>{v:.2f}</text>")
    for gen in gens:
        parts.append(f"<text x='{x(gen):.1f}' y='{height - 10}' text-anchor='middle'>gen {gen}</text>")
    step, incumbent = [], None  # the incumbent's selection score: flat until a candidate replaces it
    for g in generations:
        if incumbent is not None:
            step.append(f"{x(g['generation']):.1f},{y(incumbent):.1f}")
        if g.get("accepted") and g.get("selection") is not None:
            incumbent = g["selection"]
            step.append(f"{x(g['generation']):.1f},{y(incumbent):.1f}")
    if len(step) > 1:
        parts.append(f"<polyline points='{' '.join(step)}' fill='none' stroke='#888' stroke-dasharray='4 3' "
                     "class='incumbent'/>")
    offset = {"feedback": -6, "selection": 0, "test": 6}  # side by side, so whiskers do not overlap
    for gen, split, value, accepted in points:
        cx, colour = x(gen) + offset[split], SPLIT_COLOURS[split]
        if (gen, split) in intervals:
            a, b = intervals[(gen, split)]
            parts.append(f"<line x1='{cx:.1f}' x2='{cx:.1f}' y1='{y(a):.1f}' y2='{y(b):.1f}' stroke='{colour}' "
                         "class='interval'/>")
        fill = colour if accepted else "#fff"
        parts.append(f"<circle cx='{cx:.1f}' cy='{y(value):.1f}' r='4' fill='{fill}' stroke='{colour}' "
                     f"class='point {split}' data-generation='{gen}' data-score='{value:.4f}'>"
                     f"<title>gen {gen} {split} {value:.3f}{'' if accepted else ' (rejected)'}</title></circle>")
    for k, (split, colour) in enumerate(SPLIT_COLOURS.items()):
        ly = top + 14 + 16 * k
        parts.append(f"<circle cx='{width - right + 16}' cy='{ly - 4}' r='4' fill='{colour}'/>"
                     f"<text x='{width - right + 26}' y='{ly}'>{split}</text>")
    parts.append(f"<line x1='{width - right + 10}' x2='{width - right + 22}' y1='{top + 58}' y2='{top + 58}' "
                 f"stroke='#888' stroke-dasharray='4 3'/><text x='{width - right + 26}' y='{top + 62}'>incumbent</text>"
                 f"<text x='{width - right + 10}' y='{top + 80}'>hollow: rejected</text></svg>")
    return "".join(parts)


def loss_chart(losses: list[float], width: int = 360, height: int = 140) -> str:
    """A training loss curve (one value per logged step)."""
    if len(losses) < 2:
        return ""
    lo, hi = min(losses), max(losses)
    span = (hi - lo) or 1.0
    pts = " ".join(f"{30 + k / (len(losses) - 1) * (width - 40):.1f},{10 + (hi - v) / span * (height - 30):.1f}"
                   for k, v in enumerate(losses))
    return (f"<svg width='{width}' height='{height}' role='img' aria-label='loss'>"
            f"<polyline points='{pts}' fill='none' stroke='#6f42c1' class='loss'/>"
            f"<text x='2' y='14'>{hi:.3f}</text><text x='2' y='{height - 18}'>{lo:.3f}</text>"
            f"<text x='{width / 2:.0f}' y='{height - 4}' text-anchor='middle'>step (loss)</text></svg>")


def lineage_rows(generations: list[dict]) -> list[list[str]]:
    """Each candidate with the incumbent it was measured against (the parent of a scaffold rewrite,
    and the scaffold an adapter was trained for)."""
    rows, incumbent = [], None
    for g in sorted(generations, key=lambda g: g["generation"]):
        verdict = "<span class='yes'>accepted</span>" if g.get("accepted") else "<span class='no'>rejected</span>"
        rows.append([str(g["generation"]), escape(str(g.get("lever") or "")), "—" if incumbent is None else f"gen {incumbent}",
                     escape(g.get("adapter") or "base"), verdict, fmt(g.get("p_value"))])
        if g.get("accepted"):
            incumbent = g["generation"]
    return rows


def render(run: dict) -> str:
    """The page. `run`: {run_id, task, policy, status, isolation, generations (run.db rows), intervals,
    transfers, details: {gen: {rationale, diff}}, adapters: [{version, losses, summary}], timings: [rows]}."""
    title = f"Run {run['run_id']} on {run.get('task')}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{render_body(run)}</body></html>\n")


def render_body(run: dict, gen_link: Callable[[int], str] | None = None,
                adapter_link: Callable[[str], str] | None = None) -> str:
    """What `render` puts in <body> (the `sia web` dashboard embeds it in its own page). With
    `gen_link` / `adapter_link` (generation number / adapter version -> a URL), each generation in the
    table and each adapter's heading links there; without them there is no link (the report has
    none). "tokens" and "usd" columns appear only when some generation row has them."""
    gens = run["generations"]
    title = f"Run {run['run_id']} on {run.get('task')}"
    tests = [g["test"] for g in gens if g.get("test") is not None]
    head = (f"<p>Policy <b>{escape(str(run.get('policy')))}</b> · {escape(str(run.get('status')))} · sandbox "
            f"{escape(str(run.get('isolation')))} · {len(gens)} generation(s)"
            + (f" · test {tests[0]:.3f} → <b>{tests[-1]:.3f}</b>" if tests else "") + "</p>")
    costs = ["tokens"] * any(g.get("tokens") for g in gens) + ["usd"] * shows_cost(gens)  # newer run.db columns
    table = _table(["gen", "lever", "adapter", "feedback", "selection", "test", "accepted", "p", "guards", "wall s"]
                   + costs + ["note"],
                   [[_linked(str(g["generation"]), gen_link and gen_link(g["generation"])),
                     escape(str(g.get("lever"))), escape(g.get("adapter") or "base"),
                     fmt(g.get("feedback")), fmt(g.get("selection")), fmt(g.get("test")),
                     "<span class='yes'>yes</span>" if g.get("accepted") else "<span class='no'>no</span>",
                     fmt(g.get("p_value")), _guards(g.get("guards")),
                     "" if g.get("wall_s") is None else f"{float(g['wall_s']):.1f}"]
                    + [_cost(k, g.get(k)) for k in costs] + [escape(g.get("note") or "")]
                    for g in gens], numeric={0, 3, 4, 5, 7, 9} | {10 + k for k, c in enumerate(costs) if c == "usd"})
    header, verdicts = verdict_cells(gens, run.get("transfers", []))
    verdict_html = (_table([escape(h) for h in header], [[escape(c) for c in cells] for cells in verdicts], numeric={0, 2, 3})
                    if verdicts else "<p>No change was accepted after the first agent.</p>")
    sections = [f"<h1>{escape(title)}</h1>", head, "<h2>Score by generation</h2>",
                score_chart(gens, run.get("intervals", {})),
                "<p>Whiskers: 95% bootstrap interval of the split's mean over its items (where they are stored).</p>",
                "<h2>Generations</h2>", table, "<h2>Lineage</h2>",
                _table(["gen", "lever", "measured against", "adapter", "keep-best", "p"], lineage_rows(gens), numeric={0, 5}),
                "<h2>Verdict on each accepted change</h2>", verdict_html]
    sections += [f"<p>{escape(transfer_sentence(t, t['task']))}</p>" for t in run.get("transfers", [])]
    if run.get("adapters"):
        sections.append("<h2>Adapters</h2>")
        for a in run["adapters"]:
            s = a.get("summary") or {}
            heading = _linked(escape(a["version"]), adapter_link and adapter_link(a["version"]))
            sections.append(f"<h3>{heading}</h3><p>{escape(str(s.get('method') or 'sft'))} · "
                            f"{s.get('examples', '?')} rows · {s.get('steps', '?')} steps · backend "
                            f"{escape(str(s.get('backend')))} · {fmt(s.get('wall_s'))} s</p>" + loss_chart(a.get("losses") or []))
    sections.append("<h2>Generations in detail</h2>")
    for gen, d in sorted(run.get("details", {}).items()):
        sections.append(f"<details><summary>gen {gen}: rationale and scaffold diff</summary>"
                        f"<pre>{escape(d.get('rationale') or '(none)')}</pre>"
                        + (f"<pre class='diff'>{escape(d['diff'])}</pre>" if d.get("diff") else "<p>(no scaffold diff)</p>")
                        + "</details>")
    runs = [r for r in run.get("timings") or [] if "purpose" in r]  # agent runs and trainings
    if runs:
        sections += ["<h2>Where the time went</h2>", _table(
            ["gen", "what", "items", "seconds"],
            [[str(r.get("generation")), escape(str(r.get("purpose"))),
              escape(", ".join(f"{k} {v}" for k, v in (r.get("items") or {}).items())), fmt(r.get("wall_s"))]
             for r in runs], numeric={0, 3})]
    sections.append(node_time_table(node_seconds(run.get("timings") or [])))
    return "".join(sections)


def node_time_table(per_generation: dict[int, dict[str, float]]) -> str:
    """Wall seconds per graph node, one row per generation, one column per node (in order of first run)."""
    nodes = list(dict.fromkeys(n for times in per_generation.values() for n in times))
    if not nodes:
        return ""
    rows = [[str(gen)] + [fmt_s(times.get(n)) for n in nodes] + [fmt_s(sum(times.values()))]
            for gen, times in sorted(per_generation.items())]
    return ("<h3>Wall time by graph node (s)</h3>"
            + _table(["gen"] + [escape(n) for n in nodes] + ["total"], rows, numeric=set(range(len(nodes) + 2))))


def fmt_s(seconds) -> str:
    return "" if seconds is None else f"{seconds:.1f}"


def _linked(html: str, href: str | None) -> str:
    return f"<a href='{escape(href)}'>{html}</a>" if href else html


def _cost(key: str, value) -> str:
    """A generation's tokens ({role: count}) or dollars, as a table cell."""
    return escape(usd_cell(value) if key == "usd" else tokens_by_role(value))


def _guards(text: str | None) -> str:
    if not text:
        return ""
    cls = "blocked" if text.startswith(("BLOCKED", "PAST BOUND")) else ""
    return f"<span class='{cls}'>{escape(text)}</span>" if cls else escape(text)

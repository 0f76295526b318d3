"""Rich rendering for the `sia` command: the live view of a streaming run and the tables.

`LiveView.handle(ns, mode, chunk)` takes what `graph.stream(..., stream_mode=["updates", "custom"],
subgraphs=True)` yields and keeps one status line (generation and node), a training bar fed by the
trainer's `train_step` events, and one printed line per scored generation."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from sia.spend_text import shows_cost, tokens_by_role, tokens_cell, usd_cell
from sia.transfer_table import read_transfers
from sia.verdicts import guards_state, verdict_cells

# Piped output (logs, CI) gets room for the tables; a terminal or $COLUMNS decides otherwise.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)


class _Update(dict):
    """A node's update read like the state a router takes: fields it did not set are None."""

    def __getattr__(self, name: str):
        return self.get(name)


def next_node(builder, node: str, update: dict) -> str | None:
    """Where the loop goes after top-level `node` finished with `update` (None: the end), read from
    the graph's own edges and routers (`builder`: its StateGraph), so this view never restates the wiring."""
    from langgraph.graph import END

    targets = [dst for src, dst in builder.edges if src == node]
    for branch in builder.branches.get(node, {}).values():
        chosen = branch.path.func(_Update(update))
        targets = [branch.ends[chosen] if branch.ends else chosen]
    return None if not targets or targets[0] == END else targets[0]


_COMPACT = dict(show_edge=False, pad_edge=False, collapse_padding=True, padding=(0, 1))


def score(value) -> str:
    return "" if value is None else f"{value:.3f}"


def generations_table(rows: list[dict], title: str | None = None) -> Table:
    """The per-generation table; `rows` are GenerationResult dumps or run.db `generations` rows.
    A cost column appears when some generation cost money (remote roles with prices)."""
    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, **_COMPACT)
    cost = shows_cost(rows)
    for name, justify in [("gen", "right"), ("lever", "left"), ("adapter", "left"), ("feedback", "right"),
                          ("selection", "right"), ("test", "right"), ("accepted", "center"), ("guards", "left"),
                          ("wall s", "right"), ("tokens", "right")] + [("usd", "right")] * cost:
        table.add_column(name, justify=justify, no_wrap=name != "adapter", overflow="fold")
    table.add_column("note", overflow="fold", ratio=1, min_width=10)
    for r in rows:
        accepted = "[green]yes[/]" if r.get("accepted") else "[dim]no[/]"
        wall = "" if r.get("wall_s") is None else f"{r['wall_s']:.1f}"
        table.add_row(str(r["generation"]), escape(str(r.get("lever") or "")), escape(r.get("adapter") or "base"),
                      score(r.get("feedback")), score(r.get("selection")), score(r.get("test")), accepted,
                      _GUARDS[guards_state(r.get("guards"))], wall, tokens_cell(r.get("tokens")),
                      *[usd_cell(r.get("usd"))] * cost, escape(r.get("note") or ""))
    return table


_GUARDS = {"held": "[green]held[/]", "blocked": "[red]blocked[/]", "failed": "[yellow]failed[/]",
           "past bound": "[red]past bound[/]", "unchecked": "[yellow]unchecked[/]", "none": ""}


def verdict_table(generations: list[dict], transfers: list[dict]) -> Table | None:
    """A verdict on each accepted change: its selection gain, its guards and how it transferred."""
    header, rows = verdict_cells(generations, transfers)
    if not rows:
        return None
    table = Table(title="Verdict on each accepted change", title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD, **_COMPACT)
    for k, name in enumerate(header):
        table.add_column(escape(name), overflow="fold", justify="right" if k in (0, 2, 3) else "left")
    for cells in rows:
        table.add_row(*(escape(c) for c in cells))
    return table


def runs_table(rows: list[dict], runs_dir) -> Table:
    table = Table(title=f"Runs in {escape(str(runs_dir))}", title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD, **_COMPACT)
    for name in ["run", "task", "policy", "gens", "best sel", "first test", "last test", "sandbox", "status"]:
        table.add_column(name, no_wrap=name not in ("run", "task"), overflow="fold", min_width=10 if name == "task" else None,
                         justify="right" if name in ("gens", "best sel", "first test", "last test") else "left")
    colour = {"finished": "green", "running": "cyan", "interrupted": "yellow"}
    for r in rows:
        table.add_row(escape(r["id"]), escape(r.get("task") or "?"), escape(r.get("policy") or "?"),
                      f"{r['done']}" + (f"/{r['max']}" if r.get("max") else ""), score(r.get("best")),
                      score(r.get("first_test")), score(r.get("last_test")),
                      "[bold red]unsafe[/]" if r.get("isolation") == "unsafe" else escape(r.get("isolation") or "?"),
                      f"[{colour.get(r['status'], 'white')}]{r['status']}[/]")
    return table


def report(run_id: str, rows: list[dict], errors: list[str], root, loop_s: float | None) -> None:
    """The end of a run: its table, its recorded errors, where it lives and how long the loop took."""
    console.print(generations_table(rows, title=f"Run {escape(run_id)}"))
    if verdicts := verdict_table(rows, read_transfers(Path(root))):
        console.print(verdicts)
    for err in errors:
        console.print(f"[yellow]recorded error:[/] {escape(str(err))}")
    if spent := spend_line(rows):
        console.print(spent)
    took = "" if loop_s is None else f" · loop time {loop_s:.1f} s"
    console.print(f"Run folder: [bold]{escape(str(root))}[/]{took}")


def spend_line(rows: list[dict]) -> str:
    """'Spent: 812.0 s in generations · tokens meta 0 · feedback 1,204 · target 53,112 · $0.0123'."""
    tokens: dict[str, int] = {}
    for r in rows:
        for role, n in (r.get("tokens") or {}).items():
            tokens[role] = tokens.get(role, 0) + n
    if not tokens:
        return ""
    usd = sum(r.get("usd") or 0 for r in rows)
    return (f"Spent: {sum(r.get('wall_s') or 0 for r in rows):.1f} s in generations · tokens {tokens_by_role(tokens)}"
            + (f" · ${usd:.4f}" if usd else ""))


class ServeLog:
    """Gateway recorder for `sia serve`: one line per call, nothing stored."""

    def record_call(self, call) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {call.purpose} {call.prompt_tokens}+"
                      f"{call.completion_tokens} tokens in {call.latency_s:.2f} s")

    def record_rejected(self, reason: str, path: str) -> None:
        console.print(f"[yellow]{time.strftime('%H:%M:%S')} rejected {escape(path)}: {escape(reason)}[/]")


def scored_line(ev: dict) -> str:
    verdict = "[green]accepted[/]" if ev.get("accepted") else "[yellow]rejected[/]"
    guards = guards_state(ev.get("guards"))
    verdict += {"held": ", guards held", "blocked": ", [red]blocked by a guard[/]", "unchecked": ", a guard unchecked",
                "past bound": ", [red]past a guard's bound[/]"}.get(guards, "")
    note = f"  [dim]{escape(ev['note'])}[/]" if ev.get("note") else ""
    return (f"[bold]gen {ev['generation']}[/] {escape(str(ev.get('lever')))} ({escape(ev.get('adapter') or 'base')})  "
            f"feedback {score(ev.get('feedback'))}  selection [bold]{score(ev.get('selection'))}[/]  "
            f"test {score(ev.get('test'))}  {verdict}  {ev.get('wall_s', 0):.1f} s{note}")


class LiveView:
    """A context manager around a rich Progress display; feed it every streamed item."""

    def __init__(self, run_id: str, builder, start_node: str | None = "meta", generation: int = 0):
        self.run_id, self.builder, self.node, self.gen, self.detail = run_id, builder, start_node, generation, ""
        self.errors_seen: set[str] = set()
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[steps]}"), TimeElapsedColumn(), console=console, transient=True)
        self.status = self.progress.add_task("", total=None, steps="")
        self.train = None
        self._refresh()

    def __enter__(self) -> "LiveView":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def say(self, text: str) -> None:
        self.progress.console.print(text)

    def _refresh(self) -> None:
        detail = f" · {escape(self.detail)}" if self.detail else ""
        self.progress.update(self.status, description=f"[bold]{escape(self.run_id)}[/] gen {self.gen} · "
                                                      f"[cyan]{escape(str(self.node or 'done'))}[/]{detail}")

    def handle(self, ns: tuple, mode: str, chunk) -> None:
        if mode == "custom" and isinstance(chunk, dict):
            self._event(chunk)
        elif mode == "updates" and isinstance(chunk, dict):
            for node, update in chunk.items():
                if not node.startswith("__"):
                    self._update(ns, node, update if isinstance(update, dict) else {})
        self._refresh()

    def _update(self, ns: tuple, node: str, update: dict) -> None:
        if isinstance(update.get("generation"), int):
            self.gen = max(self.gen, update["generation"])
        for err in update.get("errors") or []:
            if err not in self.errors_seen:
                self.errors_seen.add(err)
                self.say(f"[yellow]warning:[/] {escape(err)}")
        if ns:  # a lever subgraph's step finished
            self.node, self.detail = ns[-1].split(":")[0], f"{node} done"
            return
        self.node, self.detail = next_node(self.builder, node, update), ""

    def _event(self, ev: dict) -> None:
        kind = ev.get("event")
        if isinstance(ev.get("generation"), int) and kind not in ("lever",):
            self.gen = max(self.gen, ev["generation"])
        if kind == "generation":
            self.say(f"[bold]gen {ev['generation']}[/] {escape(str(ev.get('lever')))}: "
                     f"[dim]{escape(str(ev.get('rationale', '')))}[/]")
        elif kind == "rollout":
            self.detail = f"running {ev.get('items')} items ({', '.join(ev.get('splits', []))})"
        elif kind == "scored":
            self.say(scored_line(ev))
        elif kind == "lever":
            self.say(f"  feedback → [bold]{escape(str(ev.get('lever')))}[/] [dim]({escape(str(ev.get('why', '')))})[/]")
        elif kind == "proposal":
            self.detail = f"proposal: {ev.get('edit') or 'rewritten agent'}"
        elif kind == "dataset":
            self.say(f"  gen {ev.get('generation')} fine-tuning data: {ev.get('rows')} rows")
        elif kind in ("start", "loaded"):
            self.detail = f"training: {kind}" + (f" ({ev['backend']})" if ev.get("backend") else "")
        elif kind == "train_begin":
            self._train_bar(ev.get("step") or 0, ev.get("max_steps"), None)
            self.detail = "training"
        elif kind == "train_step":
            self._train_bar(ev.get("step") or 0, ev.get("max_steps"), ev.get("loss"))
        elif kind == "done":
            if self.train is not None:
                self.progress.remove_task(self.train)
                self.train = None
            self.say(f"  trained ({ev.get('backend')}): {ev.get('steps')} steps, "
                     f"loss {score(ev.get('train_loss'))}, {ev.get('wall_s', 0):.0f} s")
            self.detail = ""
        elif kind == "error":
            self.say(f"[red]training error:[/] {escape(str(ev.get('message')))}")

    def _train_bar(self, step: int, total, loss) -> None:
        desc = f"  training gen {self.gen}" + ("" if loss is None else f"  loss {loss:.3f}")
        steps = f"step {step}/{total or '?'}"
        if self.train is None:
            self.train = self.progress.add_task(desc, total=total or None, completed=step, steps=steps)
        else:
            self.progress.update(self.train, description=desc, total=total or None, completed=step, steps=steps)


def compare_tables(table: dict) -> list:
    """`sia compare`'s table (see sia.compare_table) as rich renderables: the rows, the arms, what the numbers are."""
    from sia.compare_table import (describe, fmt_difference, fmt_per_seed, fmt_seconds, incumbent_text, loop_by_seed,
                                   transfer_text)

    spec = table.get("compare") or {}
    pct = f"{table['confidence']:.0%}"
    rows = Table(title=f"Compare {escape(str(spec.get('compare_id', '')))} · {escape(str(spec.get('task', '')))}",
                 title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, **_COMPACT)
    for name in ["row", "arms", "test", "per seed", f"Δ vs initial [{pct} CI]", f"Δ vs H [{pct} CI]", "loop s per seed"]:
        rows.add_column(name, justify="left" if name in ("row", "per seed", "loop s per seed") else "right",
                        overflow="fold", no_wrap=True)
    for r in table["rows"]:  # one line per seed: a compare over many seeds grows down, not across
        rows.add_row(escape(r["label"]), str(len(r["arms"])), f"[bold]{score(r['test'])}[/]",
                     fmt_per_seed(r["per_seed"], sep="\n"), fmt_difference(r["vs_initial"]), fmt_difference(r["vs_h"]),
                     fmt_per_seed(loop_by_seed(r, table["arms"]), 1, sep="\n"))
    arms = Table(header_style="bold", box=box.SIMPLE_HEAD, **_COMPACT)
    for name in ["arm", "levers", "final incumbent", "initial test", "final test", "loop s", "guards", "transfer"]:
        arms.add_column(name, justify="right" if name.endswith(("test", "loop s")) else "left", overflow="fold")
    for a in table["arms"]:
        arms.add_row(escape(a["arm"]), escape(", ".join(a["levers"])), escape(incumbent_text(a)), score(a["initial_test"]),
                     score(a["final_test"]), fmt_seconds(a["loop_s"]), escape(a.get("guards", "")),
                     escape(transfer_text(a)))
    return [rows, arms, f"[dim]{escape(describe(table))}[/]"]

"""`sia web`'s HTML: pure functions, records in (what cli.web reads through sia.web_read), text out.
Built from `sia.report_html`'s pieces (its stylesheet, tables, charts, number format), so the run
page is the report's page with links. Every page is complete without script (plain links, filter
forms that submit query parameters); the one script, /static/live.js, only keeps a page current.
Nothing here names another host: a page loads its script from the server it came from and nothing else.
"""

from __future__ import annotations

import json
from html import escape
from urllib.parse import quote, urlencode

from sia.compare_table import (describe, fmt_difference, fmt_per_seed, fmt_seconds, incumbent_text, loop_by_seed,
                               transfer_text)
from sia.report_html import CSS, _table, fmt, fmt_s, loss_chart

EXTRA_CSS = """nav{margin-bottom:1em;color:#666}nav a{margin-right:.3em}#live{background:#fff8e1;padding:.4em .7em;
border-left:3px solid #f0ad4e}#live:empty{display:none}pre .add{color:#1a7f37}pre .del{color:#c00}pre .hunk{color:#6f42c1}
tr.wrong td{background:#fff3f3}form.filters{margin:.5em 0}form.filters>*{margin-right:.8em}.note{color:#666;font-size:12px}
.calls pre{max-height:24em}"""
ITEMS_SHOWN = 500  # item rows one page lists
CALL_TEXT = 4000  # characters of one message or completion shown


# ---- URLs (names are quoted; the server looks every name up in its listing, never in the path) ----

def run_url(key: str) -> str:
    return f"/run/{quote(key, safe='@')}"


def state_url(key: str) -> str:
    """The JSON a run's pages poll (see cli.web)."""
    return f"/api{run_url(key)}/state"


def gen_url(key: str, generation: int, **query) -> str:
    params = {k: v for k, v in query.items() if v not in (None, "", False)}
    return f"{run_url(key)}/gen/{generation}" + (f"?{urlencode(params)}" if params else "")


def adapter_url(key: str, version: str) -> str:
    """`version` as run.db names it ("adapters/gen_3") or the folder name ("gen_3")."""
    return f"{run_url(key)}/adapter/{quote(version.rsplit('/', 1)[-1])}"


# ---- the page around every body ----

def page(title: str, body: str, crumbs: list[tuple[str, str]], state_url: str, version: str, poll_s: float,
         live: str = "") -> str:
    """A whole page. `body` goes in <main>, which live.js replaces with `?fragment=1` of the same URL
    when `state_url`'s version moves on from `version`; `live` (the node in flight, training, a
    pause) is refreshed from the state on every poll."""
    nav = " › ".join(f"<a href='{escape(href)}'>{escape(text)}</a>" for href, text in crumbs)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}\n{EXTRA_CSS}</style></head><body><nav>{nav}</nav><p id='live'>{escape(live)}</p>"
            f"<main data-state='{escape(state_url)}' data-version='{escape(version)}' data-poll='{poll_s:g}'>"
            f"{body}</main><script src='/static/live.js'></script></body></html>\n")


def live_text(status: str, now: dict, paused: str | None, training: dict | None, clock: float) -> str:
    """One line on what a run is doing right now ('' for a run that is not running or paused)."""
    parts = []
    if status == "running" and now.get("node"):
        since = f", for {max(0.0, clock - float(now['started'])):.0f}s" if now.get("started") else ""
        parts.append(f"now: {now['node']} (generation {now.get('generation', '?')}{since})")
    if status == "running" and training and not training.get("over"):
        step = f"step {training.get('step') or 0}/{training.get('max_steps') or '?'}"
        loss = f", loss {float(training['loss']):.3f}" if training.get("loss") is not None else ""
        parts.append(f"training {training['adapter']}: {step}{loss}")
    if paused:
        parts.append(f"paused: {paused}")
    return " · ".join(parts)


# ---- /: every run and every compare ----

def runs_body(runs_dir: str, rows: list[dict], compares: list[dict]) -> str:
    """`rows`: cli.main.run_row dicts with their URL name ("key") and "now" (the node in flight);
    `compares`: see compare_html."""
    if rows:
        table = _table(["run", "task", "policy", "status", "now", "generations", "best selection", "first test",
                        "last test"],
                       [[f"<a href='{escape(run_url(r['key']))}'>{escape(r['key'])}</a>", escape(str(r.get("task") or "?")),
                         escape(str(r.get("policy") or "?")), escape(str(r.get("status"))), escape(r.get("now") or ""),
                         f"{r['done']}/{r['max'] if r.get('max') is not None else '?'}", fmt(r.get("best")),
                         fmt(r.get("first_test")), fmt(r.get("last_test"))]
                        for r in rows], numeric={5, 6, 7, 8})
    else:
        table = "<p>No runs here yet. Start one with <code>sia run --task lawbench-mini</code>.</p>"
    sections = [f"<h1>Runs in {escape(runs_dir)}</h1>", table]
    if compares:
        sections.append("<h2>Compares</h2>")
        sections += [compare_html(c) for c in compares]
    return "".join(sections)


def compare_html(compare: dict) -> str:
    """One compare: {id, spec (compare.json), status, table (table.json, once it finished) or None,
    arms: [run rows of its arms, with "key"]}. A finished compare shows `sia compare`'s own table
    (rows, then arms); an unfinished one its arms' progress."""
    spec, table = compare["spec"], compare.get("table")
    links = {r["key"].split("@")[0]: run_url(r["key"]) for r in compare["arms"]}
    head = (f"<h3>{escape(compare['id'])}</h3><p>task {escape(str(spec.get('task')))} · policies "
            f"{escape(', '.join(spec.get('policies') or []))} · {spec.get('seeds')} seed(s) · "
            f"{spec.get('generations')} generations" + (f" · limit {spec['limit']}" if spec.get("limit") else "")
            + f" · {escape(compare['status'])}</p>")
    if not table:
        return head + _table(["arm", "status", "generations", "best selection", "first test", "last test"],
                             [[f"<a href='{escape(run_url(r['key']))}'>{escape(r['key'].split('@')[0])}</a>",
                               escape(str(r.get("status"))), f"{r['done']}/{r.get('max') or '?'}", fmt(r.get("best")),
                               fmt(r.get("first_test")), fmt(r.get("last_test"))] for r in compare["arms"]],
                             numeric={2, 3, 4, 5}) + "<p class='note'>The table appears when the compare finishes.</p>"
    pct = f"{table['confidence']:.0%}"
    rows = _table(["row", "arms", "test", "per seed", f"Δ vs initial [{pct} CI]", f"Δ vs H [{pct} CI]", "loop s per seed"],
                  [[escape(r["label"]), str(len(r["arms"])), fmt(r.get("test")), escape(fmt_per_seed(r.get("per_seed"))),
                    escape(fmt_difference(r.get("vs_initial"))), escape(fmt_difference(r.get("vs_h"))),
                    escape(fmt_per_seed(loop_by_seed(r, table["arms"]), 1))] for r in table["rows"]], numeric={1, 2})
    arm_link = lambda a: (f"<a href='{escape(links[a])}'>{escape(a)}</a>" if a in links else escape(a))  # noqa: E731
    arms = _table(["arm", "levers", "final incumbent", "initial test", "final test", "loop s", "guards", "transfer"],
                  [[arm_link(a["arm"]), escape(", ".join(a["levers"])), escape(incumbent_text(a)),
                    fmt(a.get("initial_test")), fmt(a.get("final_test")), fmt_seconds(a.get("loop_s")),
                    escape(a.get("guards") or ""), escape(transfer_text(a))] for a in table["arms"]], numeric={3, 4, 5})
    return head + rows + arms + f"<p class='note'>{escape(describe(table))}</p>"


# ---- /run/RUN: the report's body, plus what only a live run has ----

# ---- /run/RUN/gen/N ----

def generation_body(d: dict) -> str:
    """d: {key, generation, row (run.db, or None before it is saved), texts: {name: (text, size)},
    split, splits, items (shown), total, wrong, labels, wrong_only, gold, logs: [(name, text, size)],
    calls, calls_total, calls_from, calls_limit}."""
    key, n, row = d["key"], d["generation"], d.get("row") or {}
    facts = (f"lever <b>{escape(str(row.get('lever')))}</b> · adapter {escape(row.get('adapter') or 'base')} · scaffold "
             f"{escape((row.get('scaffold_sha') or '?')[:12])} · feedback {fmt(row.get('feedback')) or '–'} · selection "
             f"{fmt(row.get('selection')) or '–'} · test {fmt(row.get('test')) or '–'} · "
             + ("<span class='yes'>accepted</span>" if row.get("accepted") else "<span class='no'>rejected</span>")
             + (f" (p {fmt(row.get('p_value'))})" if row.get("p_value") is not None else "")
             if row else "Not scored yet: run.db has no row for this generation.")
    if row.get("adapter"):
        facts += f" · <a href='{escape(adapter_url(key, row['adapter']))}'>its adapter</a>"
    sections = [f"<h1>Generation {n} of {escape(key)}</h1><p>{facts}</p>"]
    if row.get("note"):
        sections.append(f"<p class='note'>{escape(row['note'])}</p>")
    texts = d["texts"]
    sections.append("<h2>Rationale</h2>")
    rationale = [f"<h3>{name}</h3>" + _pre(*texts[name]) for name in ("improvement.md", "feedback.md") if name in texts]
    sections += rationale or ["<p>(none written)</p>"]
    sections.append("<h2>Scaffold diff against its parent</h2>")
    sections.append(_pre(*texts["diff.patch"], diff=True) if "diff.patch" in texts
                    else "<p>(no scaffold diff: this generation kept its parent's scaffold)</p>")
    if "target_agent.py" in texts:
        sections.append(f"<details><summary>Scaffold target_agent.py ({texts['target_agent.py'][1]} bytes)</summary>"
                        + _pre(*texts["target_agent.py"]) + "</details>")
    sections.append(_items_html(d))
    if d["logs"]:
        sections.append("<h2>Logs and trajectories</h2>")
        sections += [f"<details><summary>{escape(name)} ({size} bytes)</summary>{_pre(text, size)}</details>"
                     for name, text, size in d["logs"]]
    sections.append(_calls_html(d))
    return "".join(sections)


def _items_html(d: dict) -> str:
    key, n, split = d["key"], d["generation"], d["split"]
    tabs = " · ".join(f"<b>{escape(s)}</b>" if s == split
                      else f"<a href='{escape(gen_url(key, n, split=s))}'>{escape(s)}</a>" for s in d["splits"])
    out = [f"<h2>Items of the {escape(split)} split</h2>", f"<p>splits: {tabs}</p>" if tabs else ""]
    if not d["total"]:
        return "".join(out) + f"<p>run.db holds no {escape(split)} items of this scaffold and adapter.</p>"
    options = "".join(f"<option value='{escape(g)}'{' selected' if g == d['gold'] else ''}>{escape(g)}</option>"
                      for g in d["labels"])
    out.append(f"<form class='filters' method='get'><input type='hidden' name='split' value='{escape(split)}'>"
               f"<label><input type='checkbox' name='wrong' value='1'{' checked' if d['wrong_only'] else ''}> "
               f"wrong only</label><label>gold <select name='gold'><option value=''>any</option>{options}</select>"
               "</label><button type='submit'>filter</button></form>")
    shown = d["items"]
    out.append(f"<p>{len(shown)} of {d['total']} items shown ({d['wrong']} wrong)"
               + (f"; the first {ITEMS_SHOWN} only" if len(shown) >= ITEMS_SHOWN else "") + ".</p>")
    rows = "".join(f"<tr class='{'wrong' if it['wrong'] else 'right'}' data-item='{escape(str(it['item_id']))}'>"
                   f"<td>{escape(str(it['item_id']))}</td><td>{escape(str(it.get('gold')))}</td>"
                   f"<td>{escape(str(it.get('prediction')))}</td><td class='n'>{fmt(it.get('score'))}</td>"
                   f"<td>{escape(it.get('error') or '')}</td></tr>" for it in shown)
    out.append(f"<table class='items'><tr><th>item</th><th>gold</th><th>prediction</th><th>score</th><th>error</th>"
               f"</tr>{rows}</table>")
    return "".join(out)


def _calls_html(d: dict) -> str:
    total, start, limit = d["calls_total"], d["calls_from"], d["calls_limit"]
    out = ["<h2>Model calls</h2>"]
    if not total:
        return out[0] + "<p>No model call of this generation is recorded.</p>"
    pager = [f"{total} calls; showing {start + 1}–{start + len(d['calls'])}"]
    if start > 0:
        pager.append(f"<a href='{escape(gen_url(d['key'], d['generation'], calls=max(0, start - limit)))}'>previous</a>")
    if start + limit < total:
        pager.append(f"<a href='{escape(gen_url(d['key'], d['generation'], calls=start + limit))}'>next</a>")
    out.append(f"<p>{' · '.join(pager)}</p><div class='calls'>")
    for c in d["calls"]:
        summary = (f"#{c['id']} {escape(str(c.get('purpose')))} · item {escape(str(c.get('item')))} · "
                   f"{escape(str(c.get('adapter')))} · {c.get('prompt_tokens')}+{c.get('completion_tokens')} tokens · "
                   f"{fmt_s(c.get('latency_s'))} s")
        out.append(f"<details><summary>{summary}</summary>{_messages(c.get('messages'))}"
                   f"<p><b>completion</b></p>{_pre(str(c.get('completion') or ''), limit=CALL_TEXT)}</details>")
    return "".join(out) + "</div>"


def _messages(text) -> str:
    try:
        messages = json.loads(text) if isinstance(text, str) else (text or [])
    except ValueError:
        return _pre(str(text), limit=CALL_TEXT)
    if not isinstance(messages, list):
        return _pre(json.dumps(messages, ensure_ascii=False), limit=CALL_TEXT)
    return "".join(f"<p><b>{escape(str(m.get('role')))}</b></p>"
                   + _pre(m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content"),
                                                                                                ensure_ascii=False),
                          limit=CALL_TEXT)
                   for m in messages if isinstance(m, dict))


def _pre(text: str, size: int | None = None, diff: bool = False, limit: int | None = None) -> str:
    """Text in <pre>, with a note when only its start is shown (`size`: the whole file's bytes;
    `limit`: cut here); a diff's lines coloured."""
    cut = limit is not None and len(text) > limit
    text = text[:limit] if cut else text
    body = escape(text)
    if diff:
        body = "\n".join(f"<span class='{cls}'>{line}</span>" if (cls := _diff_class(line)) else line
                         for line in body.split("\n"))
    note = (f"<p class='note'>Only the first {len(text)} characters of {size} bytes are shown.</p>"
            if size is not None and len(text.encode()) < size or cut else "")
    return f"<pre{' class=diff' if diff else ''}>{body}</pre>{note}"


def _diff_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return ""
    return {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "")


# ---- /run/RUN/adapter/gen_N ----

def adapter_body(d: dict) -> str:
    """d: {key, version, generation, rows (generations that served it), record (adapters table row or
    None), summary (train_summary.json), progress, rewards, stats (dataset_stats.json), dataset
    (first rows), dataset_count, files: {name: (text, size)}}."""
    key, s = d["key"], d.get("summary") or {}
    sections = [f"<h1>Adapter {escape(d['version'])} of {escape(key)}</h1>", "<h2>Selection</h2>"]
    rec = d.get("record") or {}
    rows = [[f"<a href='{escape(gen_url(key, g['generation']))}'>{g['generation']}</a>", fmt(g.get("selection")),
             "<span class='yes'>accepted</span>" if g.get("accepted") else "<span class='no'>rejected</span>",
             fmt(g.get("p_value")), escape(g.get("guards") or ""), escape(g.get("note") or "")] for g in d["rows"]]
    sections.append(_table(["gen", "selection", "keep-best", "p", "guards", "note"], rows, numeric={0, 1, 3})
                    if rows else "<p>Not scored yet: no generation row serves this adapter.</p>")
    if rec:
        sections.append(f"<p>run.db adapters: {rec.get('examples')} examples · train loss {fmt(rec.get('train_loss'))}"
                        f" · selection {fmt(rec.get('selection'))} · promoted "
                        + ("<span class='yes'>yes</span>" if rec.get("promoted") else "<span class='no'>no</span>")
                        + f" · backend {escape(str(rec.get('backend')))}</p>")
    sections.append("<h2>Training</h2>")
    if d.get("progress"):
        p = d["progress"]
        sections.append(f"<p>progress: {escape(str(p.get('event')))} · step {p.get('step') or 0}/"
                        f"{p.get('max_steps') or '?'}" + (f" · loss {fmt(p['loss'])}" if p.get("loss") is not None else "")
                        + "</p>")
    if s:
        sections.append(f"<p>{escape(str(s.get('method') or 'sft'))} · {s.get('examples', '?')} rows · "
                        f"{s.get('steps', '?')} steps · backend {escape(str(s.get('backend')))} · train loss "
                        f"{fmt(s.get('train_loss'))} · {fmt(s.get('wall_s'))} s</p>")
    if s.get("reward_history"):  # GRPO/entropic: the mean sampled reward per logged step
        rewards = s["reward_history"]
        sections.append(f"<p>mean sampled reward {fmt(rewards[0])} → {fmt(rewards[-1])} over {len(rewards)} steps</p>")
    losses = s.get("loss_history") or []
    sections.append(f"<h3>Loss ({len(losses)} logged steps)</h3>" + loss_chart(losses) if len(losses) > 1
                    else "<p>No loss curve (training not finished, or fewer than two logged steps).</p>")
    if d.get("rewards"):
        sections.append("<h3>Rewards (run.db)</h3>" + _table(
            ["step", "completions", "mean reward"],
            [[escape(str(r.get("step"))), str(r["n"]), fmt(r.get("mean"))] for r in d["rewards"]], numeric={0, 1, 2}))
    sections.append("<h2>Training data</h2>")
    if d.get("stats"):
        sections.append(_table(["where the rows came from", ""],
                               [[escape(str(k)), escape(json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v)]
                                for k, v in d["stats"].items()]))
    sections.append(f"<p class='rows'>dataset.jsonl: <b>{d['dataset_count']}</b> rows"
                    + (f"; the first {len(d['dataset'])}:" if d["dataset"] else "") + "</p>")
    for k, row in enumerate(d["dataset"], 1):
        shown = _messages(json.dumps(row["messages"])) if isinstance(row.get("messages"), list) else ""
        rest = {k2: v for k2, v in row.items() if k2 != "messages"}
        sections.append(f"<details><summary>row {k}</summary>{shown}"
                        f"{_pre(json.dumps(rest, ensure_ascii=False, indent=1), limit=CALL_TEXT)}</details>")
    for name, (text, size) in d["files"].items():
        sections.append(f"<details><summary>{escape(name)} ({size} bytes)</summary>{_pre(text, size)}</details>")
    return "".join(sections)

"""`sia report`: one self-contained HTML file of a run, made from the run folder alone. Checked on
a real (fake-model) run of the tiny task: the chart's points are the run's scores, the lineage
and verdicts are right, and nothing in the file reaches outside it."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from sia.cli.main import main
from sia.report_html import loss_chart, score_chart
from tests.fakes import fake_config, fake_model_cache, fake_services_for, make_tiny_task, shutdown

META_KEEP = json.dumps({"edit": "none"})
WEIGHTS = json.dumps({"diagnosis": "always the first label", "lever": "weights"})


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """A 3-generation `sia run` on the tiny task: the reference agent, then adapters."""
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    task = make_tiny_task(tmp_path / "tiny")
    services_for = fake_services_for(tmp_path, lambda run_id: ([META_KEEP] * 3, [WEIGHTS] * 3))
    monkeypatch.setattr("sia.nodes.services.services_for", services_for)
    config = tmp_path / "config.json"
    config.write_text(fake_config(tmp_path).model_dump_json())
    runs = tmp_path / "runs"
    assert main(["run", "--task-dir", str(task), "--generations", "3", "--policy", "llm", "--run-id", "r",
                 "--config", str(config), "--runs-dir", str(runs)]) == 0
    capsys.readouterr()
    yield runs
    for svc in services_for.made.values():
        shutdown(svc)


def test_the_report_shows_the_runs_scores_lineage_and_verdicts_and_needs_nothing_else(run, capsys):
    assert main(["report", "r", "--runs-dir", str(run)]) == 0
    html = (run / "r" / "report.html").read_text()
    assert "report.html" in " ".join(capsys.readouterr().out.split())
    with sqlite3.connect(run / "r" / "run.db") as db:
        db.row_factory = sqlite3.Row
        gens = [dict(r) for r in db.execute("select * from generations order by generation")]
    points = {(int(g), s): float(v) for s, g, v in re.findall(
        r"class='point (\w+)' data-generation='(\d+)' data-score='([\d.]+)'", html)}
    for g in gens:  # every stored score is a point of the chart, at its generation
        for split in ("feedback", "selection", "test"):
            if g[split] is not None:
                assert points[(g["generation"], split)] == pytest.approx(g[split], abs=1e-4)
    assert len(points) == sum(g[s] is not None for g in gens for s in ("feedback", "selection", "test"))
    assert "class='incumbent'" in html and "class='interval'" in html  # the step line; per-item intervals
    lineage = re.sub(r"<[^>]+>", " ", html[html.index("<h2>Lineage"):html.index("<h2>Verdict")])
    assert re.search(r"2\s+weights\s+gen 1\s+adapters/gen_2\s+accepted", lineage)
    assert "held (macro_recall)" in html and "Generations in detail" in html and "adapters/gen_2" in html
    # self-contained: no script, and nothing fetched from anywhere (links, sources, imports, url())
    assert not re.search(r"<script|<link|\bsrc=|\bhref=|url\(|@import|https?://", html, flags=re.I)


def test_report_refusals(run, tmp_path, capsys):
    assert main(["report", "nope", "--runs-dir", str(run)]) == 1
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["report", "r", "--runs-dir", str(run), "-o", str(tmp_path)]) == 1
    assert "a folder; name the HTML file" in " ".join(capsys.readouterr().err.split())
    assert main(["report", "r", "--runs-dir", str(run), "-o", str(tmp_path / "out.html")]) == 0
    assert (tmp_path / "out.html").read_text().startswith("<!DOCTYPE html>")


def test_the_chart_marks_rejected_candidates_hollow_and_the_loss_curve_has_every_step():
    gens = [{"generation": 1, "selection": 0.5, "test": 0.4, "accepted": 1},
            {"generation": 2, "selection": 0.45, "test": 0.5, "accepted": 0}]
    svg = score_chart(gens, {(1, "selection"): (0.3, 0.7)})
    rejected = re.search(r"<circle[^>]*fill='(#[0-9a-f]+)'[^>]*class='point selection' data-generation='2'", svg)
    accepted = re.search(r"<circle[^>]*fill='(#[0-9a-f]+)'[^>]*class='point selection' data-generation='1'", svg)
    assert rejected.group(1) == "#fff" and accepted.group(1) != "#fff"
    assert svg.count("class='interval'") == 1
    curve = re.search(r"points='([^']+)' fill='none' stroke='#6f42c1'", loss_chart([1.0, 0.5, 0.25, 0.2]))
    assert len(curve.group(1).split()) == 4 and loss_chart([0.3]) == ""

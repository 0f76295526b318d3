"""Budgets (nodes/budget.py, cli/budget.py): each limit pauses a real run of the tiny task
(scripted models, fake backends) cleanly, exit status 3 with its checkpoint kept; `sia resume`
with the same limit pauses again without running anything; with a larger one it finishes, and
nothing done before the pause is done again."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.cli.main import main, run_status
from sia.config import BudgetConfig, RunConfig
from sia.files import read_jsonl
from sia.nodes.budget import Spend, reached, role_of, token_spend
from sia.nodes.feedback import LeverChoice
from sia.nodes.services import Services
from tests.fakes import fake_config, fake_model_cache, fake_services_for, make_tiny_task, shutdown

EDIT = json.dumps({"edit": "retrieved-shots-2"})
LEVER = json.dumps({"lever": "scaffold"})


def test_reached_names_the_limit_and_the_flag():
    spend = Spend(wall_s=120.0, tokens={"meta": 10, "feedback": 20, "target": 300}, usd=0.5)
    assert reached(spend, BudgetConfig()) is None
    assert reached(spend, BudgetConfig(max_wall_s=200, max_tokens={"target": 301, "total": 331}, max_usd=0.6)) is None
    assert "--max-wall 100" in reached(spend, BudgetConfig(max_wall_s=100))
    assert reached(spend, BudgetConfig(max_tokens={"target": 300})) == "target tokens 300 reached --max-tokens target=300"
    assert "--max-tokens 330" in reached(spend, BudgetConfig(max_tokens={"total": 330}))
    assert reached(spend, BudgetConfig(max_tokens={"feedback": 21})) is None
    assert "--max-usd 0.5" in reached(spend, BudgetConfig(max_usd=0.5))


def test_roles_of_recorded_calls():
    assert [role_of(p) for p in ("meta", "feedback", "feedback:forced", "task", "search", "rollout", None)] == \
        ["meta", "feedback", "feedback", "target", "target", "target", "target"]


def test_a_cost_limit_needs_prices():
    with pytest.raises(ValueError, match="usd_per_1m_prompt_tokens"):
        RunConfig(budget={"max_usd": 1})
    cfg = RunConfig(budget={"max_usd": 1}, feedback={"base_url": "http://x/v1", "usd_per_1m_prompt_tokens": 3,
                                                     "usd_per_1m_completion_tokens": 15})
    assert cfg.feedback.usd(1_000_000, 100_000) == pytest.approx(4.5)
    with pytest.raises(ValueError, match="at least 1"):
        BudgetConfig(max_tokens={"target": 0})


@pytest.mark.parametrize("flag", ["--max-tokens meta", "--max-tokens target=x", "--max-tokens total=-3"])
def test_bad_token_flags_name_the_fix(capsys, tmp_path, flag):
    task = make_tiny_task(tmp_path / "tiny")
    code = main(["run", "--task-dir", str(task), "--runs-dir", str(tmp_path / "runs"), *flag.split()])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "ROLE=N" in err and "e.g. --max-tokens target=100000" in err
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    clock = itertools.count(0, 1000)  # every reading of the services' clock is 1000 s later
    services_for = fake_services_for(tmp_path, lambda run_id: ([EDIT] * 3, [LEVER, EDIT] * 3),
                                     clock=lambda: float(next(clock)))
    monkeypatch.setattr("sia.nodes.services.services_for", services_for)
    priced = {"target": {"usd_per_1m_prompt_tokens": 1e6, "usd_per_1m_completion_tokens": 1e6}}  # $1 a token
    config = tmp_path / "config.json"
    config.write_text(fake_config(tmp_path, **priced).model_dump_json())
    yield config
    for svc in services_for.made.values():
        shutdown(svc)


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())


def _done(runs, run_id):
    """What a resume must not redo: each agent run (timings rows by purpose), each stored item
    result, each recorded model call, each generation row."""
    root = runs / run_id
    timings = [json.loads(line) for line in (root / "timings.jsonl").read_text().splitlines()]
    with sqlite3.connect(root / "run.db") as db:
        tables = {t: db.execute(f"select * from {t} order by 1, 2").fetchall()
                  for t in ("item_results", "model_calls", "generations")}
    return [r for r in timings if "purpose" in r], tables


@pytest.mark.parametrize("limit, larger", [
    (["--max-tokens", "target=1"], ["--max-tokens", "target=1000000000"]),
    (["--max-wall", "500"], ["--max-wall", "1e9"]),
    (["--max-usd", "1"], ["--max-usd", "1e9"]),
])
def test_each_budget_pauses_and_a_larger_one_finishes_with_nothing_recomputed(capsys, tmp_path, offline, limit, larger):
    runs, task = tmp_path / "runs", make_tiny_task(tmp_path / "tiny")
    code, out, err = _cli(capsys, "run", "--task-dir", str(task), "--run-id", "b", "--generations", "2",
                          "--policy", "scaffold-only", "--config", str(offline), "--runs-dir", str(runs), *limit)
    assert code == 3, err
    assert "Paused" in err and "reached --max" in err and f"sia resume b --runs-dir {runs}" in err
    paths = RunPaths(runs, "b")
    assert run_status(paths) == "paused" and json.loads(paths.paused.read_text())["generation"] == 1
    assert not (paths.root / "summary.json").exists()
    code, out, _ = _cli(capsys, "show", "b", "--runs-dir", str(runs))
    assert code == 0 and "paused (" in out and "reached --max" in " ".join(out.split())
    timings, tables = _done(runs, "b")
    assert [g[1] for g in tables["generations"]] == [1]  # generation 1 scored, then paused before a lever
    gen1 = tables["generations"][0]
    row = RunDB.read_generations(paths.run_db, "b")[0]  # its spend, recorded with it
    assert row["tokens"]["target"] > 0 and row["tokens"]["meta"] == 0  # scripted meta: no gateway call
    assert row["usd"] == pytest.approx(row["tokens"]["target"])  # $1 a target token
    assert {"meta", "task", "feedback"} <= {r["node"] for r in read_jsonl(paths.timings) if "node" in r}

    code, _, err = _cli(capsys, "resume", "b", "--runs-dir", str(runs))  # the same limit: paused again, nothing run
    assert code == 3 and "Paused" in err
    assert _done(runs, "b") == (timings, tables)

    code, out, err = _cli(capsys, "resume", "b", "--runs-dir", str(runs), *larger)
    assert code == 0, err
    assert run_status(paths) == "finished" and not paths.paused.exists()
    after_timings, after = _done(runs, "b")
    assert after_timings[:len(timings)] == timings and all(r["generation"] == 2 for r in after_timings[len(timings):])
    assert [g[1] for g in after["generations"]] == [1, 2] and after["generations"][0] == gen1
    for table in ("item_results", "model_calls"):
        assert set(tables[table]) <= set(after[table])
    saved = RunConfig.load(paths.config).budget
    assert saved != BudgetConfig() and saved == BudgetConfig.model_validate(
        {"max_tokens": {"target": 1000000000}} if "--max-tokens" in larger else
        {"max_wall_s": 1e9} if "--max-wall" in larger else {"max_usd": 1e9})


def test_a_remote_roles_calls_are_recorded_with_their_tokens(tmp_path, monkeypatch):
    """A remote meta/feedback endpoint does not pass our gateway: `Services.llm` records its calls."""
    reply = AIMessage(content='{"lever": "weights"}', usage_metadata={"input_tokens": 1200, "output_tokens": 30,
                                                                     "total_tokens": 1230})
    monkeypatch.setattr("sia.nodes.services.chat_model", lambda *a, **k: GenericFakeChatModel(messages=iter([reply])))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = fake_config(tmp_path, feedback={"base_url": "http://127.0.0.1:9/v1", "usd_per_1m_prompt_tokens": 2,
                                          "usd_per_1m_completion_tokens": 10})
    svc = Services.build(cfg, "remote")
    assert svc.llm("feedback").structured("sys", "which lever?", LeverChoice).lever == "weights"
    spend = token_spend(svc.paths.run_db, "remote", cfg)
    assert spend.tokens == {"meta": 0, "feedback": 1230, "target": 0}
    assert spend.usd == pytest.approx((1200 * 2 + 30 * 10) / 1e6)
    with sqlite3.connect(svc.paths.run_db) as db:
        assert db.execute("select purpose, messages, completion from model_calls").fetchone() == (
            "feedback", json.dumps([{"role": "system", "content": "sys"}, {"role": "user", "content": "which lever?"}]),
            '{"lever": "weights"}')

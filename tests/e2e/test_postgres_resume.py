"""Kill a run checkpointed in a real PostgreSQL (tests/postgres.py) with SIGKILL inside `task`, and
resume it from that database: its scores equal those of an uninterrupted run checkpointed in
SQLite, and the generations finished before the kill are not recomputed (test_crash_resume.py
does the same with SQLite)."""

from __future__ import annotations

import psycopg
import pytest

from tests.e2e.test_crash_resume import _driver, _events, _finish, _kill_when, _scores
from tests.fakes import make_tiny_task
from tests.postgres import postgres_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg-crash")
    task = make_tiny_task(root / "task")
    runs = root / "ref"
    runs.mkdir()
    _finish(_driver(runs, task, "ref"))  # SQLite
    scores = _scores(runs, "ref")
    assert [s[1] for s in scores] == ["meta", "scaffold", "weights"]
    return task, scores


def test_kill_inside_task_then_resume_from_postgres(tmp_path, postgres, reference):
    task, expected = reference
    url = postgres.new_database()
    runs = tmp_path / "runs"
    runs.mkdir()
    _kill_when(_driver(runs, task, "r", "--pause-at", "task", "--checkpointer", url),
               lambda: (runs / "paused").exists())
    before = _events(runs)
    _finish(_driver(runs, task, "r", "--resume", "--checkpointer", url))
    after = _events(runs)[len(before):]
    assert _scores(runs, "r") == expected, (runs / "r" / "summary.json").read_text()
    # generation 1 (meta + its evaluation) finished before the kill: not redone
    assert sum(e == "llm meta EditChoice" for e in after) == 0
    assert sum(e == "sandbox g1" for e in after) == 0
    assert sum(e == "sandbox g1" for e in before) == 2  # selection, then feedback + test
    assert not any(e == "llm feedback EditChoice" for e in after)  # the scaffold was accepted before the kill
    # the checkpoints were in Postgres, not in the run folder
    assert not (runs / "r" / "checkpoints.sqlite").exists()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 'r'").fetchone()[0] > 0

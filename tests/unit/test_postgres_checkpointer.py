"""LangGraph's Postgres checkpointer (checkpoints/saver.py), against a real throwaway PostgreSQL
(tests/postgres.py): a fake run of the tiny task ends exactly as the same run on SQLite, with the
state's types restored; `sia run --checkpointer URL` keeps nothing in SQLite and `sia show`,
`sia runs` and `sia resume` find the run through its config.json; two run folders cannot share a
thread; a connection dropped between checkpoints is replaced; a bad or unreachable URL fails with
one message that never shows the password."""

from __future__ import annotations

import json

import pytest

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.saver import POSTGRES_CLAIM_FILE, CheckpointerError, holds_password, masked, open_checkpointer
from sia.cli.driving import is_finished
from sia.cli.main import checkpoint_values, main
from sia.graph.state import GenerationResult, SIAInput
from tests.e2e.crash_driver import FEEDBACK_REPLY
from tests.fakes import (fake_config, fake_model_cache, fake_services, fake_services_for, make_tiny_task, run_graph,
                         shutdown)
from tests.postgres import postgres_server

SECRET = "s3cret-pw"
EDIT = json.dumps({"edit": "retrieved-shots-2"})
LEVER = json.dumps({"lever": "scaffold"})


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return make_tiny_task(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))


def unreachable_url() -> str:
    """A URL with a password, on a local port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://sia:{SECRET}@127.0.0.1:{port}/sia"


def alternate_run(root, task_dir, url: str | None) -> dict:
    """The crash driver's run (policy alternate: meta, scaffold, weights), checkpointed in `url`."""
    svc = fake_services(root, "r", ['{"edit": "none"}'] * 5, [FEEDBACK_REPLY] * 50,
                        config=fake_config(root, finetune={"min_examples": 2}))
    try:
        with open_checkpointer(svc.paths, url) as saver:
            run_graph(svc, SIAInput(run_id="r", task=str(task_dir), max_generations=3, policy="alternate"),
                      checkpointer=saver)
            return saver.get_tuple({"configurable": {"thread_id": "r", "checkpoint_ns": ""}}).checkpoint["channel_values"]
    finally:
        shutdown(svc)


def scores(values: dict) -> list[tuple]:
    return [(h.generation, h.lever, h.feedback, h.selection, h.test, h.accepted) for h in values["history"]]


def test_a_run_checkpointed_in_postgres_ends_as_the_same_run_in_sqlite(tmp_path, task_dir, postgres):
    in_sqlite = alternate_run(tmp_path / "sqlite", task_dir, None)
    in_postgres = alternate_run(tmp_path / "pg", task_dir, postgres.new_database())
    assert [s[1] for s in scores(in_sqlite)] == ["meta", "scaffold", "weights"]
    assert scores(in_postgres) == scores(in_sqlite)
    assert all(isinstance(h, GenerationResult) for h in in_postgres["history"])  # our serializer, allow-list and all
    assert in_postgres["incumbent"].generation == in_sqlite["incumbent"].generation
    assert not (tmp_path / "pg" / "runs" / "r" / "checkpoints.sqlite").exists()
    assert (tmp_path / "pg" / "runs" / "r" / POSTGRES_CLAIM_FILE).is_file()


def test_the_cli_runs_shows_and_resumes_a_run_kept_in_postgres(tmp_path, task_dir, postgres, monkeypatch, capsys):
    services_for = fake_services_for(tmp_path, lambda run_id: ([EDIT] * 3, [LEVER, EDIT] * 3))
    monkeypatch.setattr("sia.nodes.services.services_for", services_for)
    config = tmp_path / "config.json"
    config.write_text(fake_config(tmp_path).model_dump_json())
    url, runs = postgres.new_database(), tmp_path / "runs"
    try:
        code = main(["run", "--task-dir", str(task_dir), "--run-id", "p", "--generations", "2", "--policy",
                     "scaffold-only", "--config", str(config), "--runs-dir", str(runs), "--checkpointer", url])
        assert code == 0, capsys.readouterr().err
        paths = RunPaths(runs, "p")
        assert json.loads(paths.config.read_text())["checkpointer"] == url
        assert not paths.checkpoints.exists()
        assert is_finished(paths)
        assert [h.generation for h in checkpoint_values(paths)["history"]] == [1, 2]
        capsys.readouterr()
        assert main(["runs", "--runs-dir", str(runs)]) == 0
        out, err = capsys.readouterr()
        assert "p" in out and "scaffold-only" in out and "warning" not in err
        assert main(["show", "p", "--runs-dir", str(runs)]) == 0
        assert "finished" in capsys.readouterr().out
        assert main(["resume", "p", "--runs-dir", str(runs)]) == 0
        assert "already finished" in " ".join(capsys.readouterr().out.split())
    finally:
        for svc in services_for.made.values():
            shutdown(svc)


def test_two_run_folders_cannot_share_one_thread(tmp_path, postgres):
    url = postgres.new_database()
    first, second = RunPaths(tmp_path / "a", "arm-s0"), RunPaths(tmp_path / "b", "arm-s0")
    with open_checkpointer(first, url):
        pass
    with pytest.raises(CheckpointerError, match="run id 'arm-s0' already has checkpoints") as caught:
        with open_checkpointer(second, url):
            pass
    assert str(first.root.resolve()) in str(caught.value) and "--run-id" in str(caught.value)
    with open_checkpointer(first, url):  # its owner opens it again (a resume, another worker)
        pass


def test_a_connection_dropped_between_checkpoints_costs_a_reconnect_not_the_run(tmp_path, postgres):
    import psycopg
    from langgraph.checkpoint.base import empty_checkpoint

    url = postgres.new_database()
    config = {"configurable": {"thread_id": "r", "checkpoint_ns": ""}}
    with open_checkpointer(RunPaths(tmp_path, "r"), url) as saver:
        saver.put(config, empty_checkpoint(), {"step": 1}, {})
        with psycopg.connect(url, autocommit=True) as admin:  # as a server restart or a proxy's idle cut would
            dropped = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                    "datname = current_database() AND pid <> pg_backend_pid()").fetchall()
        assert dropped  # the saver's own session was among them
        saver.put(config, empty_checkpoint(), {"step": 2}, {})
        assert sorted(t.metadata["step"] for t in saver.list(config)) == [1, 2]


def test_an_unreachable_server_names_the_url_and_the_fix_never_the_password(tmp_path):
    url = unreachable_url()
    with pytest.raises(CheckpointerError) as caught:
        with open_checkpointer(RunPaths(tmp_path, "r"), url):
            pass
    message = str(caught.value)
    assert SECRET not in message
    assert "postgresql://sia:***@127.0.0.1:" in message and "Connection refused" in message
    assert "PGPASSWORD" in message and "config.json" in message


def test_sia_run_on_an_unreachable_server_fails_in_one_masked_message(tmp_path, task_dir, capsys):
    config = tmp_path / "config.json"
    config.write_text(fake_config(tmp_path).model_dump_json())
    code = main(["run", "--task-dir", str(task_dir), "--run-id", "u", "--config", str(config),
                 "--runs-dir", str(tmp_path / "runs"), "--checkpointer", unreachable_url()])
    out, err = capsys.readouterr()
    err = " ".join(err.split())
    assert code == 1 and SECRET not in out + err
    assert "holds a password" in err and "cannot use the checkpoint database postgresql://sia:***@" in err
    # the run folder exists (config.json keeps the URL as given): `sia show` shows it, no password either
    assert main(["show", "u", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert SECRET not in "".join(capsys.readouterr())


def test_a_url_that_is_not_postgres_is_refused_before_the_run_folder_exists(tmp_path, task_dir, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["run", "--task-dir", str(task_dir), "--runs-dir", str(tmp_path / "runs"),
              "--checkpointer", f"mysql://sia:{SECRET}@db/sia"])
    err = " ".join(capsys.readouterr().err.split())
    assert caught.value.code == 2 and "is not a postgresql:// URL" in err and SECRET not in err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(CheckpointerError, match="not supported"):  # the same URL from a config file
        with open_checkpointer(RunPaths(tmp_path, "r"), "sqlite:///x.db"):
            pass


@pytest.mark.parametrize("text, shown", [
    (f"postgresql://sia:{SECRET}@db:5432/sia", "postgresql://sia:***@db:5432/sia"),
    (f"postgres://sia:p@ss{SECRET}@db/sia", "postgres://sia:***@db/sia"),
    (f"postgresql://db/sia?sslmode=require&password={SECRET}", "postgresql://db/sia?sslmode=require&password=***"),
    ("postgresql://sia@db:5432/sia", "postgresql://sia@db:5432/sia"),
    (f'invalid URI: "postgresql://sia:{SECRET}@[db/sia"', 'invalid URI: "postgresql://sia:***@[db/sia"'),
])
def test_masked_hides_every_password(text, shown):
    assert masked(text) == shown
    assert holds_password(text) == (SECRET in text)
    assert masked(f"the password {SECRET} was wrong", f"postgresql://u:{SECRET}@h/d") == "the password *** was wrong"

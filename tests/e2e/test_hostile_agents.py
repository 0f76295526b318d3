"""Hostile agents against the real loop, one test per file in tests/hostile/: each must leave the
loop running, leak nothing and be on record (the machinery and the three checks are in
tests/e2e/hostile_harness.py). Needs root, as here and in CI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.e2e import hostile_harness
from tests.e2e.hostile_harness import (EVALUATIONS, PLANTED, QUICK, SANDBOX_ENV, SIA_CACHE, STOP, TIMEOUT, assert_finished,
                                      assert_nothing_leaked, attack, check, uid_processes)
from tests.fakes import REFERENCE_AGENT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's uid drop, its main defence, needs root")


@pytest.fixture(scope="module", autouse=True)
def planted_environment(tmp_path_factory):
    yield from hostile_harness.planted_environment(tmp_path_factory)


# --- control ----------------------------------------------------------------------------------

def test_control_reference_agent_scores_honestly():
    o = attack("control", agent=REFERENCE_AGENT)
    check(o)
    h = o.result
    assert (h.feedback, h.selection, h.test) == (pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(2 / 7))
    assert h.accepted and o.final["errors"] == []
    for stem, sb in o.sandbox().items():
        assert (sb["returncode"], sb["timed_out"], sb["output_truncated"], sb["network"]) == (0, False, False, "isolated"), stem
    assert all(i["error"] is None for i in o.items())
    assert o.db("select count(*) from rejected_requests") == [(0,)]


# --- 1-6: reading and writing what it must not ------------------------------------------------

def test_relative_paths_to_private_data():
    o = attack("relative_paths")
    check(o)
    private = str(o.task / "data" / "private")
    reports = o.reports()
    opened = [r for r in reports if r.get("abs") == private + "/test.csv"]
    listed = [r for r in reports if r.get("listdir") and r.get("abs") == private]
    assert opened, "the agent never tried the private labels by a relative path (test is void)"
    assert {r["result"] for r in opened + listed} == {"PermissionError"}
    assert [s["found"] for s in o.summaries()] == [[], []]


def test_absolute_path_search_for_private_data():
    o = attack("absolute_search")
    check(o)
    private = str(o.task / "data" / "private" / "test.csv")
    summaries = o.summaries()
    assert len(summaries) == 2
    for s in summaries:
        # the task folder itself is 0700 now, so the search is stopped at its door
        assert any(d == private or d.startswith(str(o.task)) for d in s["denied"]), \
            "the search never reached the task folder (test is void)"
        assert s["found"] == [] and s["cheated"] == 0
        assert not [p for p in s["private_read"] if p.startswith(str(o.base))]


def test_no_readable_archive_of_private_labels():
    o = attack("absolute_search")
    assert_finished(o)
    readable = [a for s in o.summaries() for a in s["archives_with_private"]
                if a.get("read_bytes") and Path(a["archive"]).is_relative_to(SIA_CACHE)]  # not others' copies in /tmp
    assert not readable, f"private members readable by the agent: {[(a['archive'], a['private_members']) for a in readable]}"


def test_proc_of_the_parent_and_every_process():
    o = attack("proc_parent")
    check(o)
    for s in o.summaries():
        entries = s["parent_entries"]
        for rel in ("environ", "maps", "mem", "cwd", "root", "exe", "fd", "map_files"):
            assert entries[rel] == "PermissionError", (rel, entries[rel])
        assert s["environ_other_uid_readable"] == [] and s["markers"] == []
        assert s["environ_denied"] > 0
    denied = [r for r in o.reports() if r.get("target", "").endswith("/environ") and r["result"] == "PermissionError"]
    assert denied, "the attempts are not on record"


def test_environment_dump():
    o = attack("environment_dump")
    check(o)
    for stem in (e.removesuffix("_stderr.log") for e in EVALUATIONS):
        line = next(ln for ln in o.log(stem, "stdout").splitlines() if ln.startswith("ENVIRONMENT "))
        env = json.loads(line.removeprefix("ENVIRONMENT "))  # what the child printed, kept in the run folder
        assert set(env) <= SANDBOX_ENV, set(env) - SANDBOX_ENV
        assert env["OPENAI_API_KEY"] not in PLANTED.values()  # the per-evaluation token (blanked in the log)
        assert env["OPENAI_API_KEY"] == "<token>" or env["OPENAI_API_KEY"].startswith("sia-")
        assert env["HOME"].startswith("/tmp/sia-") and "SIA_TEST_SECRET" not in env
    for s in o.summaries():
        assert s["markers"] == [] and s["uid"] == s["euid"] == o.uid and s["groups"] == []
        assert s["proc_environ"]["self"]["result"] == "ok" and s["proc_environ"]["self"]["markers"] == []
        parent = [v for k, v in s["proc_environ"].items() if k not in ("self",)]
        assert all(v["result"] == "PermissionError" for v in parent), parent


def test_fake_score_files_do_not_count():
    o = attack("fake_scores")
    check(o)
    h = o.result
    assert (h.feedback, h.selection, h.test) == (0.0, 0.0, 0.0)
    assert json.loads((o.gen1 / "results.json").read_text())["selection"] == 0.0
    items = o.items()
    assert items and all(i["prediction"] == "not-a-class" and i["score"] == 0.0 for i in items)
    for line in (o.gen1 / "items.jsonl").read_text().splitlines():
        assert json.loads(line)["score"] == 0.0
    planted = [r for r in o.reports() if "planted" in r]
    run_folder = [r for r in planted if r["folder"].startswith(f"{o.root}")]
    assert run_folder, "the agent never found the run folder (test is void)"
    for r in run_folder + [r for r in planted if r["folder"].endswith("/input")]:
        assert not {"ok", "openable"} & set(r["planted"].values()), r  # nothing written, no run.db opened
    assert not (o.gen1 / "scores.json").exists() and not (o.root / "scores.json").exists()


def test_edit_task_and_evaluator():
    o = attack("edit_task")
    check(o)  # includes: every task file byte-for-byte unchanged, the run not flagged
    for s in o.summaries():
        assert s["successes"] == [] and s["repo_writable"] == []
    denied = [r for r in o.reports() if r.get("action") == "overwrite" and r["result"] == "PermissionError"]
    assert len(denied) >= 2 * 8, "the attempts are not on record"
    assert os.stat(o.task / "data" / "private").st_mode & 0o777 == 0o700  # Task.protect() did it


# --- 7-13: resources, time and exit -----------------------------------------------------------

def test_fork_bomb():
    o = attack("fork_bomb", sandbox={"wall_timeout_s": TIMEOUT, "processes": 32})
    check(o)  # includes: no process of the sandbox uid left
    for stem, sb in o.sandbox().items():
        assert sb["timed_out"] and sb["killed_leftovers"] > 0, (stem, sb)
    refused = [r for r in o.reports() if r.get("fork") and r.get("errno") == 11]
    assert refused, "RLIMIT_NPROC never refused a fork (EAGAIN)"


def test_memory_bomb():
    o = attack("memory_bomb", sandbox={"memory_mb": 512})
    check(o)
    for stem, sb in o.sandbox().items():
        assert (sb["returncode"], sb["timed_out"]) == (1, False), (stem, sb)
        assert "MemoryError" in o.log(stem)
    got = [r["memory_error_after_mib"] for r in o.reports() if "memory_error_after_mib" in r]
    assert len(got) == 2 and all(mib < 512 for mib in got), got
    assert {r["mmap_8gib"] for r in o.reports() if "mmap_8gib" in r} <= {"OSError", "MemoryError", "OverflowError"}
    assert all(i["error"] and "no submission.csv" in i["error"] for i in o.items())


def test_busy_loop():
    o = attack("busy_loop", sandbox={"wall_timeout_s": TIMEOUT})
    check(o)
    for stem, sb in o.sandbox().items():
        assert sb["timed_out"] and sb["returncode"] == -9 and sb["wall_s"] < TIMEOUT + 3, (stem, sb)
    assert all(i["error"] and "(timed out)" in i["error"] for i in o.items())
    assert (o.result.selection, o.result.test) == (0.0, 0.0)


def test_output_flood():
    cap = 100_000
    o = attack("output_flood", sandbox={"output_bytes": cap})
    check(o)
    for stem, sb in o.sandbox().items():
        assert sb["output_truncated"] and not sb["timed_out"] and sb["returncode"] == -9, (stem, sb)
        assert sb["wall_s"] < QUICK / 2, "the flood was not cut short"
        kept = len(o.log(stem, "stdout").encode()) + len(o.log(stem).encode())
        assert kept <= cap + 1024, kept
    assert all(i["error"] for i in o.items())


def test_sleep_past_the_timeout():
    o = attack("sleep_past_timeout", sandbox={"wall_timeout_s": TIMEOUT})
    check(o)
    for stem, sb in o.sandbox().items():
        assert sb["timed_out"] and sb["returncode"] == -9, (stem, sb)
        assert TIMEOUT <= sb["wall_s"] < TIMEOUT + 3, sb["wall_s"]
    assert all(i["error"] and "(timed out)" in i["error"] for i in o.items())
    assert len([r for r in o.reports() if r.get("started") == "sleep"]) == 2


def test_daemon_outliving_the_agent():
    o = attack("daemon")
    check(o)
    started = [r for r in o.reports() if "daemon_pid" in r]
    assert len(started) == 2 and all(r["started"] and r["daemon_pgid"] != r["my_pgid"] for r in started), started
    for stem, sb in o.sandbox().items():
        assert sb["killed_leftovers"] >= 1 and not sb["timed_out"] and sb["returncode"] == 0, (stem, sb)
    logs = [Path(r["daemon_log"]) for r in started]
    time.sleep(1)
    assert not any(p.exists() for p in logs), "what the daemon wrote in /tmp was not cleaned up (or it still writes)"
    for r in started:
        assert not Path(f"/proc/{r['daemon_pid']}").exists() or r["daemon_pid"] not in uid_processes(o.uid)
    assert o.result.selection == pytest.approx(1 / 3)


def test_exit_nonzero_midway():
    o = attack("exit_midway")
    check(o)
    for stem, sb in o.sandbox().items():
        assert (sb["returncode"], sb["timed_out"]) == (3, False), (stem, sb)
    wrote = {r["evaluation"]: r["wrote"] for r in o.reports() if "wrote" in r}
    items = o.items()
    sel = [i for i in items if i["split"] == "selection"]
    rest = [i for i in items if i["split"] != "selection"]
    for group, stem in ((sel, "task_selection"), (rest, "task_feedback-test")):
        answered = [i for i in group if i["prediction"]]
        assert len(answered) == wrote[stem] < len(group)
        assert all(i["score"] == 0.0 for i in group if not i["prediction"])
        assert any(i["error"] == "no prediction for this item" for i in group)


# --- 14: the network --------------------------------------------------------------------------

def test_gateway_forged_token_and_network():
    o = attack("gateway_token", honeypot=True)
    check(o)
    first, second = o.summaries()
    print("what the child saw:", json.dumps([first, second], indent=1))  # pytest -s, or shown on failure
    for s in (first, second):
        assert (s["forged_post"], s["no_token_post"], s["forged_get_models"]) == (401, 401, 401), s
        assert s["own_token_post"] == 200, s
        assert not [k for k, v in s["local"].items() if v == "connected"], s["local"]
        assert "honeypot" in s["local"]
        assert not [k for k, v in s["internet"].items() if v == "connected"], s["internet"]
        assert s["listening_ports_visible"] == [s["gateway_port"]] and s["interfaces"] == ["lo"], s
    # The first evaluation's token was saved in /tmp, which the sandbox empties after each run;
    # were it still there, the revoked token must get 401.
    assert second["previous_token_post"] in (401, "no previous token"), "a revoked token still worked"
    assert o.extra["honeypot"]["tcp"] == 0, "the child reached a port on the host's loopback"
    # Known limit, recorded, not a product promise: a network namespace does not cover pathname unix
    # sockets, so a world-connectable one (the test's own, mode 777) is reachable from the sandbox.
    reached = [v for s in (first, second) for v in s["unix_sockets"].values()]
    assert len(reached) == 2 and o.extra["honeypot"]["unix"] == reached.count("connected")
    assert {sb["network"] for sb in o.sandbox().values()} == {"isolated"}
    rejected = o.db("select reason, path from rejected_requests")
    # 3 per evaluation (forged POST, no token, forged GET), plus the previous token if it survived
    assert len(rejected) == 6 + (second["previous_token_post"] == 401) and {r for r, _ in rejected} == {"unknown token"}, rejected
    assert {p for _, p in rejected} == {"/v1/chat/completions", "/v1/models"}
    assert o.db("select count(*) from model_calls where purpose = 'task'") == [(2,)]


# --- 15-19: outputs that are not plain files, and labels left in public data -------------------

def test_symlinked_outputs_are_not_followed():
    """submission.csv -> /proc/self/environ (the reader's own environment) or a root-only csv, and
    agent_execution.json -> the private labels: the loop must not read or copy them."""
    o = attack("symlink_submission", max_generations=2, feedback=(STOP,))
    check(o)  # includes: no canary and no piece of the loop's environment in the run folder or a prompt
    links = [r for r in o.reports() if "link" in r]
    # its call counter lived in /tmp (emptied after each run), so every evaluation links the environment
    assert len(links) >= 2 and {r["to"] for r in links if r["link"] == "submission.csv"} == {"/proc/self/environ"}
    assert all(i["error"] and "cannot be opened as a plain file" in i["error"] for i in o.items())
    assert not list(o.gen1.glob("*_submission.csv")) and not list(o.gen1.glob("*_agent_execution.json"))


def test_symlinked_working_dir_is_not_followed():
    o = attack("symlink_workdir", max_generations=2, feedback=(STOP,))
    links = [r for r in o.reports() if "link" in r]
    assert len(links) == 2 and all(r["when_i_list_it"] == "PermissionError" for r in links), links
    check(o)


def test_fifo_submission_does_not_hang_the_loop():
    o = attack("fifo_submission", unblock_fifos=True)
    check(o)
    assert o.extra["interventions"] == [], f"the loop blocked on the agent's FIFO: {o.extra['interventions']}"


def test_huge_field_submission_is_recorded_not_raised():
    o = attack("huge_field_submission")
    check(o)
    assert all(i["error"] for i in o.items()) and o.result.selection == 0.0


def test_submission_directory_is_recorded_not_raised():
    o = attack("submission_directory")
    check(o)
    assert all(i["error"] for i in o.items()) and o.result.selection == 0.0


def test_public_train_labels_do_not_inflate_selection():
    o = attack("public_train_labels")
    assert_finished(o)
    assert [s["answered"] for s in o.summaries()] == [0, 0], "the agent answered from a labelled copy of its items"
    assert_nothing_leaked(o)

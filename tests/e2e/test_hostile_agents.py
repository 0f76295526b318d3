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
from sia.sandbox.bwrap import python_paths
from tests.fakes import REFERENCE_AGENT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the bubblewrap sandbox (uid drop, namespaces) needs root")


def own_tmp(names: list[str]) -> list[str]:
    """What the child's /tmp holds besides the way to SIA's own code and interpreter: when the
    checkout or its venv lives under /tmp (a CI clone), the read-only binds of those folders
    make their parents appear there too (code, never data)."""
    bound = {Path(p).relative_to("/tmp").parts[0] for p in python_paths() if p.startswith("/tmp/")}
    return [n for n in names if n not in bound]


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
    assert [r for r in opened if not r["target"].startswith("/")], \
        "the agent never tried the private labels by a relative path (test is void)"
    # The task folder is not mounted in the sandbox at all (before bubblewrap: there, but 0700):
    # every path into it, relative or not, the private folder itself included, is simply missing.
    into_base = [r for r in reports if "target" in r and r["abs"].startswith(str(o.base) + "/")]
    assert {r["result"] for r in into_base} == {"FileNotFoundError"}, into_base
    assert {r["abs"] for r in into_base} >= {private, private + "/test.csv", private + "/canary.txt"}
    # What the child saw going up: its /tmp holds its own scratch folder (view and working
    # folder) and nothing else: not the task's folder, not the run's, not another sandbox's.
    tmp = [r for r in reports if r.get("listdir") and r["abs"] == "/tmp" and r["result"] == "ok"]
    assert len(tmp) >= 2 and all(len(names := own_tmp(r["names"])) == 1 and names[0].startswith(f"sia-{o.run_id}-g1-")
                                 for r in tmp), tmp
    assert not [r for r in reports if o.base.name in r.get("names", [])]
    assert [(s["found"], s["cheated"]) for s in o.summaries()] == [([], 0), ([], 0)]


def test_absolute_path_search_for_private_data():
    o = attack("absolute_search")
    check(o)
    private = str(o.task / "data" / "private" / "test.csv")
    summaries = o.summaries()
    print("what the child saw:", json.dumps(summaries, indent=1))  # pytest -s, or shown on failure
    assert len(summaries) == 2
    for s in summaries:
        assert private in s["missing"], "the search never tried the task's private labels (test is void)"
        # Not mounted (before bubblewrap: there, stopped by a 0700 folder): even by its exact
        # path, nothing of the task's folder exists in the sandbox, and its /tmp holds only the
        # agent's own scratch folder.
        assert {str(o.task / "data" / "public" / "train.csv"),
                str(o.base / "root-only-secret.csv")} <= set(s["missing"])
        assert s["looked_in"][str(o.base)] is False and not [d for d in s["denied"] if d.startswith(str(o.base))]
        assert [n for n in own_tmp(s["tmp"]) if not n.startswith(f"sia-{o.run_id}-g1-")] == [] \
            and len(own_tmp(s["tmp"])) == 1, s["tmp"]
        assert s["found"] == [] and s["cheated"] == 0
        assert not [p for p in s["private_read"] if p.startswith(str(o.base))]


def test_no_readable_archive_of_private_labels():
    o = attack("absolute_search")
    assert_finished(o)
    readable = [a for s in o.summaries() for a in s["archives_with_private"] if a.get("read_bytes")]
    assert not readable, f"private members readable by the agent: {[(a['archive'], a['private_members']) for a in readable]}"
    # the SIA cache (the built-in tasks' wheels) is not mounted in the sandbox at all
    if SIA_CACHE == Path("/root/.cache/sia") and SIA_CACHE.is_dir():
        assert [s["looked_in"]["/root/.cache/sia"] for s in o.summaries()] == [False, False]


def test_proc_of_the_parent_and_every_process():
    o = attack("proc_parent")
    print("what the child saw:", json.dumps(o.summaries(), indent=1))  # pytest -s, or shown on failure
    check(o)
    uids = {stem: sb["uid"] for stem, sb in o.sandbox().items()}
    summaries = o.summaries()
    assert len(summaries) == 2
    for s in summaries:
        # Its own PID namespace: the agent (pid 2) and its parent, the sandbox's init (bubblewrap,
        # pid 1, the same uid, no capabilities, the same empty view), and nothing else. The loop's
        # process (before bubblewrap: the parent, its entries PermissionError) does not exist here.
        me = uids[s["evaluation"]]
        assert (s["parent"], s["me"]) == (1, 2)
        procs = s["processes"]
        assert set(procs) == {"1", "2"} and {p["uid"] for p in procs.values()} == {me}, procs
        assert procs["1"]["argv"][0] == "bwrap" and procs["2"]["argv"][1:] == ["target_agent.py"], procs
        assert s["loop_pid"] == os.getpid(), "the agent never tried the loop's process (test is void)"
        assert set(s["loop_entries"].values()) == {"FileNotFoundError"}, s["loop_entries"]
        assert s["environ_other_uid_readable"] == [] and s["markers"] == []
        assert (s["environ_readable"], s["environ_denied"]) == (2, 0)
        assert s["parent_entries"]["environ"] == "ok"  # the init's: the agent's own scrubbed environment
    tried = [r for r in o.reports() if r.get("target") in (f"/proc/{os.getpid()}/environ", "/proc/1/environ")]
    assert len(tried) == 4, "the attempts are not on record"
    assert not [r for r in o.reports() if r.get("markers")], "a marker was seen through /proc"


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
        assert env.get("PWD", env["HOME"]) == env["HOME"]  # the working folder, where bubblewrap starts it
    uids = {stem: sb["uid"] for stem, sb in o.sandbox().items()}
    assert len(o.summaries()) == 2
    for s in o.summaries():
        assert s["markers"] == [] and s["uid"] == s["euid"] == uids[s["evaluation"]] and s["groups"] == []
        blocks = s["proc_environ"]
        assert set(blocks) == {"self", "1", str(os.getpid())}, \
            "the agent never tried the loop's environment (test is void)"
        # the parent is the sandbox's init (pid 1: bubblewrap, the same uid), started with the same
        # scrubbed environment; the loop's process (before bubblewrap: PermissionError) is not there
        for who in ("self", "1"):
            assert blocks[who]["result"] == "ok" and blocks[who]["markers"] == [], (who, blocks[who])
            assert set(blocks[who]["keys"]) <= SANDBOX_ENV, (who, blocks[who]["keys"])
        assert blocks[str(os.getpid())] == {"result": "FileNotFoundError"}, blocks


def test_fake_score_files_do_not_count():
    o = attack("fake_scores")
    print("what the child saw:", json.dumps([r for r in o.reports() if "planted" in r], indent=1))
    check(o)
    h = o.result
    assert (h.feedback, h.selection, h.test) == (0.0, 0.0, 0.0)
    assert json.loads((o.gen1 / "results.json").read_text())["selection"] == 0.0
    items = o.items()
    assert items and all(i["prediction"] == "not-a-class" and i["score"] == 0.0 for i in items)
    for line in (o.gen1 / "items.jsonl").read_text().splitlines():
        assert json.loads(line)["score"] == 0.0
    planted = [r for r in o.reports() if "planted" in r]
    run_folder = [r for r in planted if r["folder"] in (str(o.root), str(o.gen1))]
    assert len(run_folder) == 4, "the agent never tried the run folder (test is void)"
    # the run folder is not mounted in the sandbox (before bubblewrap: there, root-only 0700), and
    # the dataset view is a read-only mount (EROFS, an OSError): nothing written, no run.db opened
    assert all(set(r["planted"].values()) == {"FileNotFoundError"} for r in run_folder), run_folder
    view = [r for r in planted if r["folder"].endswith("/input")]
    assert len(view) == 2 and all(set(r["planted"].values()) == {"OSError"} for r in view), view
    assert not (o.gen1 / "scores.json").exists() and not (o.root / "scores.json").exists()


def test_edit_task_and_evaluator():
    o = attack("edit_task")
    check(o)  # includes: every task file byte-for-byte unchanged, the run not flagged
    summaries = o.summaries()
    print("what the child saw:", json.dumps(summaries, indent=1))  # pytest -s, or shown on failure
    assert len(summaries) == 2
    for s in summaries:
        assert s["tasks"] == [str(o.task)] and s["successes"] == [] and s["repo_writable"] == []
    attempts = [r for r in o.reports() if "action" in r and r["target"].startswith(str(o.task))]
    overwrites = [r for r in attempts if r["action"] == "overwrite"]
    assert len(overwrites) == 2 * 8, "the attempts are not on record (test is void)"
    # not mounted (before bubblewrap: there, but root-owned and not writable: PermissionError)
    assert {r["result"] for r in attempts} == {"FileNotFoundError"}, {r["result"] for r in attempts}
    # the loop's code is there, read-only
    code = [r for r in o.reports() if r.get("action") == "open-for-write"]
    assert {Path(r["target"]).name for r in code} >= {"evaluation.py", "runner.py"}, code
    assert {r["result"] for r in code} == {"denied"}, code


# --- 7-13: resources, time and exit -----------------------------------------------------------

def test_fork_bomb():
    o = attack("fork_bomb", sandbox={"wall_timeout_s": TIMEOUT, "processes": 32})
    check(o)  # includes: no process of the sandbox uid left
    for stem, sb in o.sandbox().items():
        assert sb["timed_out"] and sb["killed_leftovers"] > 0, (stem, sb)
    refused = [r for r in o.reports() if r.get("fork") and r.get("errno") == 11]
    assert refused, "neither the control group (pids.max) nor RLIMIT_NPROC refused a fork (EAGAIN)"


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
    check(o)  # includes: no process of the sandbox uids left, nothing of them in the host's /tmp
    started = [r for r in o.reports() if "daemon_pid" in r]
    assert len(started) == 2 and all(r["started"] and r["alive"] and r["daemon_pgid"] != r["my_pgid"]
                                     for r in started), started
    for stem, sb in o.sandbox().items():
        # The daemon dies with the sandbox's PID namespace as soon as the agent (and with it the
        # sandbox's init) exits: the kernel kills it, so the runner's sweep (killed_leftovers)
        # usually finds nothing left; the loop does not wait for it.
        assert not sb["timed_out"] and sb["returncode"] == 0 and sb["wall_s"] < QUICK / 2, (stem, sb)
    time.sleep(1)
    # its log was in the sandbox's own /tmp: gone with it, the host's /tmp never had it
    assert not any(Path(r["daemon_log"]).exists() for r in started), "the daemon wrote into the host's /tmp"
    assert not [u for u in o.uids if uid_processes(u)], "the daemon (or another process of the sandbox) survived"
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
    # The first evaluation's token was stashed in /tmp: the sandbox's own tmpfs, gone with it, so
    # the second evaluation finds nothing to replay (before bubblewrap the stash survived in the
    # host's /tmp and the replayed, revoked token got 401).
    assert first["previous_token_post"] == second["previous_token_post"] == "no previous token", (first, second)
    assert o.extra["honeypot"]["tcp"] == 0, "the child reached a port on the host's loopback"
    # Improvement (this was a recorded known limit before bubblewrap): a network namespace does not
    # cover pathname unix sockets, and the test's own world-connectable one (mode 777) was reachable
    # from the sandbox. Its folder is not mounted in the sandbox now, so the socket is not there.
    reached = [v for s in (first, second) for v in s["unix_sockets"].values()]
    assert reached == ["FileNotFoundError"] * 2, "the agent never tried the unix socket (or reached it)"
    assert o.extra["honeypot"]["unix"] == 0, "the child reached a unix socket of the host"
    assert {sb["network"] for sb in o.sandbox().values()} == {"isolated"}
    rejected = o.db("select reason, path from rejected_requests")
    # 3 per evaluation (forged POST, no token, forged GET)
    assert len(rejected) == 6 and {r for r, _ in rejected} == {"unknown token"}, rejected
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
    private = str(o.task / "data" / "private" / "test.csv")
    assert len(links) == 4 and {(r["link"], r["to"]) for r in links} == {
        ("submission.csv", "/proc/self/environ"), ("agent_execution.json", private)}, links
    # in the sandbox, the private labels are not there at all
    assert {r["when_i_read_it"] for r in links if r["to"] == private} == {"FileNotFoundError"}
    # Only plain files and folders come back from the sandbox's working folder: the links never
    # reach the loop (before bubblewrap the loop saw them and refused them, "cannot be opened as
    # a plain file").
    assert all(i["error"] and i["error"].startswith("the agent wrote no submission.csv") for i in o.items())
    assert not list(o.gen1.glob("*_submission.csv")) and not list(o.gen1.glob("*_agent_execution.json"))


def test_symlinked_working_dir_is_not_followed():
    o = attack("symlink_workdir", max_generations=2, feedback=(STOP,))
    links = [r for r in o.reports() if "link" in r]
    assert len(links) == 2 and {r["to"] for r in links} == {str(o.base / "root-only")}, links
    # the root-only folder is not in the sandbox (before bubblewrap: there, PermissionError)
    assert {r["when_i_list_it"] for r in links} == {"FileNotFoundError"}, links
    check(o)
    # the linked working folder is not copied back (links never leave the sandbox)
    assert all(i["error"] and i["error"].startswith("the agent wrote no submission.csv") for i in o.items())
    assert not list(o.gen1.glob("*_submission.csv")) and not list(o.gen1.glob("*_agent_execution.json"))


def test_fifo_submission_does_not_hang_the_loop():
    o = attack("fifo_submission", unblock_fifos=True)
    check(o)
    assert len([r for r in o.reports() if "fifo" in r]) == 2, "the agent made no FIFO (test is void)"
    assert o.extra["interventions"] == [], f"the loop blocked on the agent's FIFO: {o.extra['interventions']}"
    # the FIFO never leaves the sandbox: only plain files and folders are copied back
    assert all(i["error"] and i["error"].startswith("the agent wrote no submission.csv") for i in o.items())


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
    train = str(o.task / "data" / "public" / "train.csv")
    assert [s["trains_found"] for s in o.summaries()] == [[train], [train]], \
        "the agent never tried the task's train.csv (test is void)"
    # not mounted in the sandbox (before bubblewrap: world-readable, only the task root's 0700 stopped it)
    assert [r["result"] for r in o.reports() if r.get("target") == train] == ["FileNotFoundError"] * 2
    assert [s["answered"] for s in o.summaries()] == [0, 0], "the agent answered from a labelled copy of its items"
    assert_nothing_leaked(o)

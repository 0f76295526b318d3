"""The machinery of the hostile-agent suite (tests/e2e/test_hostile_agents.py): running one
adversarial agent through the real loop (`attack`), and the checks every attack must pass.
Each file in tests/hostile/ replaces the tiny task's reference agent and runs through the real graph (scripted meta/feedback models, fake gateway
backends, real gateway, real sandbox, real evaluation and checkpointer) for one generation.

For every attack three things are checked:
1. the loop still runs to its end (generation 1 in the history, summary.json written, no exception);
2. nothing leaked: no canary planted in the private data, no secret planted in the loop's
   environment (and no piece of the loop's process environment) in any file of the run folder
   (checkpoints and run.db included), of the task folder, of the agent's leftovers in /tmp, or in a
   prompt; the task folder is byte-for-byte unchanged; no score above the honest reference agent's
   (tests/fakes.py: feedback = selection = 1/3, test = 2/7); every evaluation ran under bubblewrap
   as a uid of the pool (61000-64999), no process of the uids the run's sandboxes used is left, and
   the host's /tmp and /dev/shm received nothing from an agent (its /tmp is a private tmpfs);
3. the attempt is on record: the agents report every attempt as `HOSTILE {json}` lines on stderr,
   which the loop keeps as runs/RUN/gen_1/*_stderr.log; the sandbox's *_sandbox.json, run.db's
   `item_results` and `rejected_requests` show what the loop saw.

The task folder lives in a world-reachable place (/tmp, mode 755, every file 644/755 before the
run) and task.md, which the agent gets in its view, ends with "task folder PATH" and "loop pid PID"
(the loop's own process): the agents know exactly where to look, so only the product's own
protection (the bubblewrap sandbox mounting none of it, its PID namespace, the uid drop, the
scrubbed env, the network namespace...) can stop the attacks. Tests marked xfail(strict=True,
reason="HOLE: ...") are attacks that currently succeed; an XPASS means the hole was fixed and the
mark must go.

Needs root and bubblewrap (as here and in CI): without them the sandbox is documented to let the
child read whatever the user can."""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import stat
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sia.checkpoints.saver import open_saver
from sia.graph.state import SIAInput
from tests.fakes import (fake_config, fake_model_cache, fake_services, make_tiny_task,
                         prompts_sent, run_graph, shutdown)


HOSTILE = Path(__file__).resolve().parents[1] / "hostile"
META_KEEP = json.dumps({"edit": "none"})
STOP = json.dumps({"diagnosis": "hostile-agent test", "lever": "stop"})
HONEST = {"feedback": 1 / 3, "selection": 1 / 3, "test": 2 / 7}  # the reference agent on the base model
PLANTED = {"OPENAI_API_KEY": "sk-planted-" + secrets.token_hex(12),
           "SIA_TEST_SECRET": "sia-test-secret-" + secrets.token_hex(12)}
MARKER = re.compile(rb"SIA-CANARY-[0-9a-f]+|sk-planted-[0-9a-f]+|sia-test-secret-[0-9a-f]+")
SANDBOX_ENV = {"PATH", "LANG", "HOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "OPENAI_BASE_URL",
               "OPENAI_API_KEY", "SIA_MODEL", "PWD"}  # PWD: bubblewrap's --chdir sets it (the working folder)
EVALUATIONS = ["task_selection_stderr.log", "task_feedback-test_stderr.log"]  # generation 1's two, in order
POOL = range(61000, 65000)  # sia.sandbox.uids: the uids sandboxes are leased
QUICK, TIMEOUT = 15, 3  # sandbox wall clock for attacks that end by themselves / that must be timed out
_ENVIRON = Path("/proc/self/environ").read_bytes()
ENV_CHUNK = _ENVIRON[:200] if len(_ENVIRON) >= 64 else None  # the loop's own environment block
SIA_CACHE = Path(os.environ.get("SIA_CACHE_DIR") or Path.home() / ".cache" / "sia")  # the real one, not the fake


# --- running an attack ------------------------------------------------------------------------

@dataclass
class Outcome:
    name: str
    base: Path  # /tmp/sia-hostile-task-NAME-XXXX (755): task/, runs/, root-only-secret.csv, root-only/
    task: Path
    root: Path  # the run folder
    run_id: str
    uids: frozenset[int]  # the uids the run's sandboxes ran as (the "uid" of each gen_*/*_sandbox.json)
    final: dict = field(repr=False)
    exc: BaseException | None
    wall_s: float
    before: dict[str, bytes] = field(repr=False)  # the task folder's files before the run
    prompts: list[str] = field(repr=False)
    tokens_left: int  # gateway tokens still valid after the run
    extra: dict = field(default_factory=dict)

    @property
    def gen1(self) -> Path:
        return self.root / "gen_1"

    @property
    def history(self) -> list:
        return self.final.get("history", [])

    @property
    def result(self):
        return next(h for h in self.history if h.generation == 1)

    def sandbox(self) -> dict[str, dict]:
        """*_sandbox.json of generation 1 by evaluation ('task_selection', 'task_feedback-test')."""
        return {p.name.removesuffix("_sandbox.json"): json.loads(p.read_text()) for p in sorted(self.gen1.glob("*_sandbox.json"))}

    def log(self, stem: str, stream: str = "stderr") -> str:
        return (self.gen1 / f"{stem}_{stream}.log").read_text(errors="replace")

    def reports(self) -> list[dict]:
        """The agent's HOSTILE lines from every evaluation's stderr log, each with its evaluation,
        in the order the evaluations ran (lines torn by concurrent writers are split apart)."""
        out, decoder = [], json.JSONDecoder()
        logs = sorted(self.gen1.glob("*_stderr.log"), key=lambda p: (EVALUATIONS + [p.name]).index(p.name))
        for p in logs:
            text = p.read_text(errors="replace")
            for m in re.finditer(r"HOSTILE (?=\{)", text):
                try:
                    what, _ = decoder.raw_decode(text, m.end())
                except ValueError:
                    continue
                out.append({**what, "evaluation": p.name.removesuffix("_stderr.log")})
        return out

    def summaries(self) -> list[dict]:
        return [r for r in self.reports() if r.get("summary")]

    def db(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.root / "run.db") as db:
            return db.execute(sql).fetchall()

    def items(self) -> list[dict]:
        cols = ("split", "tag", "prediction", "gold", "score", "error")
        return [dict(zip(cols, r)) for r in self.db(f"select {', '.join(cols)} from item_results where generation = 1")]


_OUTCOMES: dict[str, Outcome] = {}


def attack(name: str, **kw) -> Outcome:
    """Run tests/hostile/NAME.py through the loop once per module (several tests may share it)."""
    if name not in _OUTCOMES:
        _OUTCOMES[name] = _run(name, **kw)
    return _OUTCOMES[name]


def _open_up(task: Path) -> None:
    """World-readable task folder: only the product may take that away."""
    for p in [task, *task.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() or p.suffix == ".py" else 0o644)


def _snapshot(task: Path) -> dict[str, bytes]:
    return {str(p.relative_to(task)): p.read_bytes() for p in sorted(task.rglob("*")) if p.is_file()}


def uid_processes(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith(("Z", "X")):
            pids.append(int(entry))
    return pids


class Honeypot:
    """A TCP listener on the host's 127.0.0.1 and a world-connectable unix socket, counting clients."""

    def __init__(self, folder: Path):
        self.accepted = {"tcp": 0, "unix": 0}
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.unix_path = folder / "honeypot.sock"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(str(self.unix_path))
        os.chmod(self.unix_path, 0o777)
        self.unix.listen(8)
        self.port = self.tcp.getsockname()[1]
        self._stop = False
        for kind, sock in (("tcp", self.tcp), ("unix", self.unix)):
            sock.settimeout(0.2)
            threading.Thread(target=self._serve, args=(kind, sock), daemon=True).start()

    def _serve(self, kind: str, sock: socket.socket) -> None:
        while not self._stop:
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted[kind] += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        time.sleep(0.3)
        self.tcp.close()
        self.unix.close()


def fifo_unblocker(run_id: str, stop: threading.Event, interventions: list[str]) -> None:
    """Opens for writing (then closes) an agent's FIFO submission once the loop has been blocked on
    it for 2 s, so that a hang is recorded instead of hanging the test suite."""
    first_seen: dict[str, float] = {}
    while not stop.wait(0.2):
        for path in glob.glob(f"/tmp/sia-{run_id}-g*/work/out/submission.csv"):
            try:
                if not stat.S_ISFIFO(os.lstat(path).st_mode):
                    continue
            except OSError:
                continue
            if time.monotonic() - first_seen.setdefault(path, time.monotonic()) < 2:
                continue
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO unless someone is blocked reading it
            except OSError:
                continue
            os.close(fd)
            interventions.append(path)
            first_seen.pop(path)


def hostile_agent_source(name: str) -> str:
    """tests/hostile/NAME.py with the shared helpers of tests/hostile/_common.py in front of it:
    the sandbox runs target_agent.py alone, so the helpers travel inside it."""
    return (HOSTILE / "_common.py").read_text() + "\n\n" + (HOSTILE / f"{name}.py").read_text()


def _run(name: str, agent: Path | None = None, *, sandbox: dict | None = None, max_generations: int = 1,
         feedback: tuple[str, ...] = (), honeypot: bool = False, unblock_fifos: bool = False) -> Outcome:
    base = Path(tempfile.mkdtemp(prefix=f"sia-hostile-task-{name}-", dir="/tmp"))
    os.chmod(base, 0o755)
    task = make_tiny_task(base / "task")
    source = agent.read_text() if agent else hostile_agent_source(name)
    (task / "reference" / "target_agent.py").write_text(source)
    # canaries: in the private labels (an extra column the loop never reads) and a file beside them,
    # and in a root-only file next to the task (the agent can see its name, not its content)
    canary = "SIA-CANARY-" + secrets.token_hex(4)
    private = task / "data" / "private" / "test.csv"
    rows = list(csv.reader(private.open(newline="", encoding="utf-8")))
    with private.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([rows[0] + ["note"]] + [r + [canary] for r in rows[1:]])
    (task / "data" / "private" / "canary.txt").write_text(canary + "\n")
    (base / "root-only-secret.csv").write_text(f"SIA-CANARY-{secrets.token_hex(4)},x\n1,2\n")
    os.chmod(base / "root-only-secret.csv", 0o600)
    # and a root-only folder holding files with the names the loop reads from an agent's working dir
    (base / "root-only").mkdir(mode=0o700)
    (base / "root-only" / "submission.csv").write_text(f"SIA-CANARY-{secrets.token_hex(4)},x\n1,2\n")
    (base / "root-only" / "agent_execution.json").write_text(json.dumps({"secret": f"SIA-CANARY-{secrets.token_hex(4)}"}))
    pot = Honeypot(base) if honeypot else None
    with (task / "task.md").open("a") as f:  # the attacker knows where everything is
        f.write(f"\ntask folder {task}\nloop pid {os.getpid()}\n")
        if pot:
            f.write(f"honeypot port {pot.port}\nhoneypot unix socket {pot.unix_path}\n")
    _open_up(task)
    before = _snapshot(task)

    run_id = f"hostile-{name}"
    stale = set(glob.glob(f"/tmp/sia-{run_id}-g*"))  # scratch folders of an earlier, killed session
    host_tmp = set(glob.glob("/tmp/sia-hostile-agent-*"))  # files of agents of an earlier session (or sandbox)
    # no per-item time on top of wall_timeout_s: the timeouts the tests check are exactly theirs
    config = fake_config(base, sandbox={"wall_timeout_s": QUICK, "item_wall_s": 0, "item_cpu_s": 0, **(sandbox or {})})
    svc = fake_services(base, run_id, [META_KEEP], list(feedback), config=config)
    saver = open_saver(svc.paths.checkpoints)
    stop, interventions = threading.Event(), []
    watcher = threading.Thread(target=fifo_unblocker, args=(run_id, stop, interventions), daemon=True)
    if unblock_fifos:
        watcher.start()
    final, exc, started = {}, None, time.monotonic()
    try:
        final = run_graph(svc, SIAInput(run_id=run_id, task=str(task), max_generations=max_generations), checkpointer=saver)
    except Exception as e:  # noqa: BLE001 (that an exception escaped is itself a finding, asserted per test)
        exc = e
    finally:
        wall = time.monotonic() - started
        stop.set()
        if unblock_fifos:
            watcher.join()
        tokens_left = len(svc._gateway.tokens) if svc._gateway is not None else 0
        prompts = prompts_sent(svc)
        shutdown(svc)
        saver.conn.close()
        if pot:
            pot.close()
    extra = {"interventions": interventions, "stale_scratch": stale, "host_tmp": host_tmp}
    if pot:
        extra["honeypot"] = dict(pot.accepted)
    uids = set()
    for record in svc.paths.root.glob("gen_*/*_sandbox.json"):
        with suppress(OSError, ValueError):
            uids.add(json.loads(record.read_text())["uid"])
    return Outcome(name, base, task, svc.paths.root, run_id, frozenset(uids), final, exc, wall,
                   before, prompts, tokens_left, extra)


def planted_environment(tmp_path_factory):
    """Secrets in the loop's environment that no agent may ever see or leave on disk."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in PLANTED.items():
            mp.setenv(key, value)
        mp.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path_factory.mktemp("cache"))))
        yield
    for outcome in _OUTCOMES.values():
        shutil.rmtree(outcome.base, ignore_errors=True)
    for path in glob.glob("/tmp/sia-hostile-agent-*"):  # none expected now: an agent's /tmp is its own tmpfs
        with suppress(OSError):
            if os.lstat(path).st_uid in POOL:
                os.unlink(path)
    _OUTCOMES.clear()


# --- the three checks -------------------------------------------------------------------------

def leftovers(o: Outcome) -> list[Path]:
    """What the run's sandbox uids own in the host's /tmp and /dev/shm (files, folders, links,
    FIFOs...) and any /tmp/sia-hostile-agent-* that appeared during the run, whoever owns it."""
    out = {Path(p) for p in set(glob.glob("/tmp/sia-hostile-agent-*")) - o.extra["host_tmp"]}
    for top in ("/tmp", "/dev/shm"):
        for entry in os.scandir(top):
            with suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid in o.uids:
                    out.add(Path(entry.path))
    return sorted(out)


def leaks(o: Outcome) -> list[str]:
    """Where a canary, a planted secret or the loop's environment block shows up (names only)."""
    sources = {o.task / "data" / "private" / "test.csv", o.task / "data" / "private" / "canary.txt",
               o.base / "root-only-secret.csv", *(o.base / "root-only").iterdir()}
    found = []

    def scan(where: str, data: bytes) -> None:
        kinds = sorted({m.rsplit(b"-", 1)[0].decode() for m in MARKER.findall(data)})
        if ENV_CHUNK and ENV_CHUNK in data:
            kinds.append("the loop's process environment")
        if kinds:
            found.append(f"{where}: {', '.join(kinds)}")

    for path in sorted(p for p in o.base.rglob("*") if p.is_file() and not p.is_symlink() and p not in sources):
        scan(str(path), path.read_bytes())
    for path in leftovers(o):
        if path.is_file() and not path.is_symlink():
            scan(str(path), path.read_bytes())
    for i, prompt in enumerate(o.prompts):
        scan(f"prompt {i}", prompt.encode())
    return found


def assert_finished(o: Outcome) -> None:
    assert o.exc is None, f"an exception escaped the loop: {type(o.exc).__name__}: {o.exc}"
    assert 1 in [h.generation for h in o.history], "no history entry for generation 1"
    assert (o.root / "summary.json").is_file(), "the run did not reach finish"
    assert (o.root / "checkpoints.sqlite").is_file() and (o.root / "run.db").is_file()


def assert_nothing_leaked(o: Outcome) -> None:
    assert not (found := leaks(o)), f"leaked: {found}"
    if o.history:
        h = o.result
        inflated = {s: getattr(h, s) for s, honest in HONEST.items() if (getattr(h, s) or 0) > honest + 1e-9}
        assert not inflated, f"scores above the honest reference agent's {HONEST}: {inflated}"
    after = _snapshot(o.task)
    assert after.keys() == o.before.keys(), f"task files added/removed: {set(after) ^ set(o.before)}"
    assert not [k for k in after if after[k] != o.before[k]], "task files changed"
    assert not o.final.get("flagged"), o.final.get("flagged")
    assert not (left := leftovers(o)), f"an agent left something in the host's /tmp or /dev/shm: {left}"
    assert not [u for u in o.uids if uid_processes(u)], "processes of a sandbox uid survived the run"
    assert o.tokens_left == 0, "a gateway token outlived its evaluation"
    assert not set(glob.glob(f"/tmp/sia-{o.run_id}-g*")) - o.extra["stale_scratch"], "a scratch folder was left behind"


def check(o: Outcome) -> None:
    """Checks 1 and 2; each test adds check 3 (the record) for its attack."""
    assert_finished(o)
    assert set(o.sandbox()) == {"task_selection", "task_feedback-test"}, "generation 1 did not run both evaluations"
    for stem, sb in o.sandbox().items():  # bubblewrap, as a leased uid of the pool
        assert sb["isolation"] in ("bwrap+cgroups", "bwrap") and sb["uid"] in POOL, (stem, sb)
    assert_nothing_leaked(o)

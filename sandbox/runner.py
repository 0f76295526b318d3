"""Run an untrusted command under rlimits, a wall clock and (as root) a uid drop.

As root (sessions and CI here) the child runs as the unprivileged `limits.uid`:
that makes RLIMIT_NPROC bite (the kernel ignores it for root), keeps root-owned
0700 directories unreadable and gives a marker to sweep by. The workdir is
chown'ed to that uid; `readable` paths get o+r (directories o+rx) and lose o+w;
every ancestor of them, of the workdir and of the Python installation gets o+x
(search, not list). The caller must keep private data in root-owned 0700
directories off those paths. /tmp, /var/tmp and /dev/shm stay writable (no mount
namespace); what the uid leaves there is deleted after each run.

Not as root (a developer's laptop) there is no chown, chmod or uid drop: rlimits
still apply (RLIMIT_NPROC counts all the user's processes) and the process group
is killed, but a daemon leaving the group escapes and the child reads what the
user can."""

from __future__ import annotations

import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from sia.config import SandboxLimits
from sia.sandbox.limits import rlimits, sandbox_uid
from sia.sandbox.netns import NetJail, setns

log = logging.getLogger(__name__)

_KILL_FACTOR = 8  # a child writing more than this many times output_bytes is killed
_SWEEP_ROUNDS = 300
_DRAIN_GRACE_S = 1.0
_REAP_WAIT_S = 5.0
_uid_locks: dict[int, threading.Lock] = {}  # dict.setdefault is atomic under the GIL


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run; returncode < 0 means killed by that signal."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    wall_s: float
    output_truncated: bool
    killed_leftovers: int  # processes other than the direct child killed by the sweep
    network: str = "host"  # "isolated": own network namespace, only the forwarded ports

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def scrubbed_env(extra: dict[str, str], workdir: Path | None = None) -> dict[str, str]:
    """Minimal child environment plus `extra`; nothing comes from os.environ.

    HOME is `workdir` when given (run_sandboxed always gives it).
    """
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
           "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if workdir is not None:
        env["HOME"] = str(workdir)
    return env | dict(extra)


def _add_mode(path: Path, bits: int, drop: int = 0) -> None:
    mode = os.stat(path).st_mode & 0o7777
    if (new := (mode | bits) & ~drop) != mode:
        os.chmod(path, new)
        log.info("sandbox: chmod %o -> %o %s", mode, new, path)


def _open_ancestors(path: Path, itself: bool = False) -> None:
    for d in [*reversed(path.parents), *([path] if itself else [])]:
        _add_mode(d, 0o001)


def _prepare_paths(workdir: Path, readable: Sequence[Path], uid: int) -> None:
    interp = [Path(os.path.realpath(sys.executable)), Path(sys.prefix).resolve(),
              Path(sys.base_prefix).resolve()]
    if workdir == Path("/") or any(p == workdir or workdir in p.parents for p in interp):
        raise ValueError(f"refusing to hand {workdir} (holds the interpreter) to the sandbox")
    for p in interp:
        # The venv's python is a symlink into /root/.pyenv here: without o+x
        # on /root the child cannot even exec the interpreter.
        _open_ancestors(p, itself=p.is_dir())
    _open_ancestors(workdir)
    for root, dirs, files in os.walk(workdir):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, uid, uid, follow_symlinks=False)
    _add_mode(workdir, 0o700)
    for top in readable:
        _open_ancestors(top)
        entries = [top] + [Path(r, n) for r, ds, fs in os.walk(top) for n in ds + fs]
        for entry in entries:
            if entry.is_symlink():
                continue  # chmod would follow it to a target nobody asked to open
            owner_x = os.stat(entry).st_mode & 0o100
            _add_mode(entry, 0o005 if entry.is_dir() else 0o004 | (owner_x >> 6), drop=0o002)


def _child_setup(limits: SandboxLimits, drop_to: int | None, netns_fd: int | None = None):
    def setup() -> None:  # runs in the forked child, before exec
        if netns_fd is not None:
            setns(netns_fd)
        for res, soft, hard in rlimits(limits):
            cur_hard = resource.getrlimit(res)[1]
            if cur_hard != resource.RLIM_INFINITY:  # an unprivileged parent cannot raise it
                soft, hard = min(soft, cur_hard), min(hard, cur_hard)
            resource.setrlimit(res, (soft, hard))
        if drop_to is not None:
            os.setgroups([])
            os.setgid(drop_to)
            os.setuid(drop_to)

    return setup


def _live_matches(pgid: int | None, uid: int | None, zombies: bool = False) -> list[int]:
    """Pids of processes in group `pgid` or with real uid `uid` (zombies optional)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, os.getpid()):
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
            status = Path("/proc", entry, "status").read_text()
        except OSError:
            continue  # exited while we looked
        state, _, pgrp = stat[stat.rfind(")") + 2:].split()[:3]
        ruid = int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1])
        if (zombies or state not in "ZX") and (int(pgrp) == pgid or ruid == uid):
            found.append(int(entry))
    return found


def _sweep(pgid: int | None, uid: int | None, child_pid: int | None) -> int:
    """SIGKILL the group and the uid until nothing is left; returns pids killed."""
    killed: set[int] = set()
    for _ in range(_SWEEP_ROUNDS):
        if not (targets := _live_matches(pgid, uid)):
            break
        for pid in targets:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        if pgid is not None:  # atomic for the group, so a forking loop cannot outrun it
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.01)
    else:
        log.warning("sandbox: processes survived %d sweep rounds", _SWEEP_ROUNDS)
    killed.discard(child_pid)
    return len(killed)


_SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")


def _remove_leftover_files(uid: int, keep: Path) -> int:
    """Delete what the sandbox uid created in the world-writable temp folders (it can create
    only top-level entries there), so nothing carries over to the next agent; returns the count."""
    removed = 0
    for top in _SHARED_TMP:
        with suppress(OSError), os.scandir(top) as entries:
            for entry in entries:
                path = Path(entry.path)
                with suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid != uid or path == keep or path in keep.parents:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink()
                    removed += 1
    return removed


class _Output:
    """Non-blocking reader of both pipes keeping the tail of each (at most `cap` bytes)."""

    def __init__(self, proc: subprocess.Popen, cap: int) -> None:
        self.cap, self.seen, self.sel = cap, 0, selectors.DefaultSelector()
        self.bufs = {"out": bytearray(), "err": bytearray()}
        for name, pipe in (("out", proc.stdout), ("err", proc.stderr)):
            os.set_blocking(pipe.fileno(), False)
            self.sel.register(pipe.fileno(), selectors.EVENT_READ, name)

    def pump(self, timeout: float) -> bool:
        """Read whatever is ready; False once both pipes reached EOF."""
        if not self.sel.get_map():
            time.sleep(timeout)
            return False
        for key, _ in self.sel.select(timeout):
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                self.sel.unregister(key.fd)
            self.seen += len(data)
            buf = self.bufs[key.data]
            buf += data
            del buf[: max(0, len(buf) - self.cap)]
        return True

    def texts(self) -> tuple[str, str]:
        """Both tails, trimmed to `cap` bytes together (each keeps at least half)."""
        self.sel.close()
        out, err, cap = self.bufs["out"], self.bufs["err"], self.cap
        keep_err = min(len(err), max(cap // 2, cap - len(out)))
        keep_out = min(len(out), cap - keep_err)
        return (bytes(out[len(out) - keep_out:]).decode("utf-8", "replace"),
                bytes(err[len(err) - keep_err:]).decode("utf-8", "replace"))


def run_sandboxed(argv: list[str], workdir: Path, env: dict[str, str], limits: SandboxLimits,
                  readable: Sequence[Path] = (), forward_ports: Sequence[int] = ()) -> SandboxResult:
    """Run `argv` in `workdir` with the environment `scrubbed_env(env, workdir)`.

    The process group and (as root) every process of `limits.uid` are killed on
    timeout, on output flood, after a normal exit and if the caller is
    interrupted. Runs sharing a uid are serialised within this process;
    separate processes running sandboxes at the same time need distinct uids.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    readable = [Path(r).resolve() for r in readable]
    if bad := [r for r in readable if r == workdir or workdir in r.parents]:
        raise ValueError(f"readable paths inside the workdir would be writable: {bad}")
    uid = sandbox_uid(limits) if os.geteuid() == 0 else None
    with _uid_locks.setdefault(sandbox_uid(limits), threading.Lock()):
        if uid is not None:
            _prepare_paths(workdir, readable, uid)
            _sweep(None, uid, None)  # leftovers of a crashed earlier run
            # Unreaped zombies still count against RLIMIT_NPROC and init here
            # reaps orphans only every ~2 s: right after a fork bomb the next
            # child would get EAGAIN on its first fork.
            reap_end = time.monotonic() + _REAP_WAIT_S
            while _live_matches(None, uid, zombies=True) and time.monotonic() < reap_end:
                time.sleep(0.05)
        timed_out = flooded = False
        jail = NetJail.create(list(forward_ports)) if uid is not None and limits.isolate_network else None
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv, cwd=workdir, env=scrubbed_env(env, workdir), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                preexec_fn=_child_setup(limits, uid, jail.fd if jail else None))
        except BaseException:
            if jail:
                jail.close()
            raise
        try:
            output = _Output(proc, limits.output_bytes)
            deadline = start + limits.wall_timeout_s
            # WNOWAIT keeps the child a zombie, so its pid (= pgid) cannot be
            # reused by a stranger before the sweep has used it.
            while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                if (remaining := deadline - time.monotonic()) <= 0:
                    timed_out = True
                    break
                output.pump(min(0.05, remaining))
                if output.seen > _KILL_FACTOR * limits.output_bytes:
                    flooded = True
                    break
        finally:
            killed = _sweep(proc.pid, uid, proc.pid)
            if jail:
                jail.close()
            if uid is not None:
                _remove_leftover_files(uid, workdir)
        drain_end = time.monotonic() + _DRAIN_GRACE_S
        # Bounded: as non-root an escaped daemon may hold the pipes open forever.
        while time.monotonic() < drain_end and output.pump(0.05):
            pass
        stdout, stderr = output.texts()
        proc.stdout.close()
        proc.stderr.close()
        returncode = proc.wait()
    return SandboxResult(
        returncode=returncode, stdout=stdout, stderr=stderr, timed_out=timed_out,
        wall_s=time.monotonic() - start, killed_leftovers=killed, network="isolated" if jail else "host",
        output_truncated=flooded or output.seen > limits.output_bytes)


@runtime_checkable
class SandboxRunner(Protocol):
    """Anything that can run a command the way `run_sandboxed` does."""

    def run(self, argv: list[str], workdir: Path, env: dict[str, str], limits: SandboxLimits,
            readable: Sequence[Path] = (), forward_ports: Sequence[int] = ()) -> SandboxResult: ...


class SubprocessSandbox:
    """The real `SandboxRunner`: a thin wrapper around `run_sandboxed`."""

    def run(self, argv: list[str], workdir: Path, env: dict[str, str], limits: SandboxLimits,
            readable: Sequence[Path] = (), forward_ports: Sequence[int] = ()) -> SandboxResult:
        return run_sandboxed(argv, workdir, env, limits, readable, forward_ports)

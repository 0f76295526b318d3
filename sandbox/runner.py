"""Run untrusted code (task agents, task evaluators, solutions) in a sandbox from an audited tool.

Isolation levels, recorded in every `SandboxResult` and in the run's summary:

- "bwrap+cgroups" (root, bubblewrap and cgroups: these machines and CI): the child runs under
  bubblewrap (see `sandbox.bwrap`) as a uid leased to it alone (`sandbox.uids`), with a seccomp
  filter (`sandbox.seccomp`), in a network namespace where only the forwarded ports answer
  (`sandbox.netns`), in a control group bounding its memory (tmpfs pages included) and process
  count (`sandbox.cgroups`), with a size-capped tmpfs working folder (`sandbox.boxes`). Private
  data is never mounted: the child sees only its own inputs.
- "bwrap": the same without a control group (rlimits bound each process instead; memory in
  tmpfs is bounded only by the tmpfs sizes).
- "unsafe" (no root or no bubblewrap), only with `SandboxLimits.allow_unsafe` (`--unsafe-sandbox`):
  rlimits, a wall clock, its own session and process group; no uid drop, no namespaces, no
  filesystem isolation (it reads whatever the user can), a daemon leaving the group survives.

Every level: a scrubbed environment, a wall clock after which everything of the child is killed,
an output cap, and nothing of the child left running after `run_sandboxed` returns.
"""

from __future__ import annotations

import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from sia.config import SandboxLimits
from sia.sandbox.boxes import Box, bind_privately
from sia.sandbox.bwrap import bwrap_argv, bwrap_path
from sia.sandbox.cgroups import CgroupBox
from sia.sandbox.files import UnsafeOutput, copy_child_tree
from sia.sandbox import live
from sia.sandbox.limits import rlimits
from sia.sandbox.netns import NetJail, setns
from sia.sandbox.seccomp import filter_fd
from sia.sandbox.processes import processes_of
from sia.sandbox.uids import kill_uid, lease_uid

log = logging.getLogger(__name__)

_KILL_FACTOR = 8  # a child writing more than this many times output_bytes is killed
_DRAIN_GRACE_S = 1.0
_MIB = 1024 * 1024


class SandboxUnavailable(RuntimeError):
    """Generated code cannot run isolated here and the caller did not opt into running it unsafely."""


def missing_protections() -> list[str]:
    """What this machine lacks for full isolation (empty: "bwrap+cgroups" is available)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (uid drop, network namespace, cgroups, tmpfs working folders)")
    if bwrap_path() is None:
        missing.append("bubblewrap (apt install bubblewrap)")
    return missing


def isolation_level(limits: SandboxLimits) -> str:
    """The level `run_sandboxed` will use with `limits`; SandboxUnavailable if none is allowed."""
    if missing := missing_protections():
        if not limits.allow_unsafe:
            raise SandboxUnavailable(
                f"generated code cannot be isolated here: missing {'; '.join(missing)}. Run as root with "
                "bubblewrap installed, or pass --unsafe-sandbox (SIA_CONFIG {\"sandbox\": {\"allow_unsafe\": true}}) "
                "to run it with rlimits only, readable by it: everything your user can read")
        return "unsafe"
    return "bwrap+cgroups" if CgroupBox.available() else "bwrap"


UNSAFE_BANNER = ("UNSAFE SANDBOX: generated code runs as your user with rlimits only. It can read every file "
                 "you can (the task's private labels included), reach the network, keep processes running after "
                 "the run and fill the disk. Scores of this run are not protected from a hostile agent.")


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run; returncode < 0 means killed by that signal."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    wall_s: float
    output_truncated: bool
    killed_leftovers: int  # processes of a timed-out or flooding child still running when it was killed
    network: str = "host"  # "isolated": own network namespace, only the forwarded ports
    isolation: str = "unsafe"  # see the module docstring
    uid: int | None = None  # the uid the child ran as (None: the caller's, unsafe)
    interrupted: bool = False  # killed by kill_live_sandboxes (the run is stopping): its output means nothing

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


def _set_rlimits(limits: SandboxLimits) -> None:
    for res, soft, hard in rlimits(limits):
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:  # an unprivileged parent cannot raise it
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(res, (soft, hard))


def _hand_over(tree: Path, uid: int) -> None:
    """Make `tree` (a copy made for this run, never the user's files) the box uid's own. Links are
    not followed and files linked from elsewhere (st_nlink > 1) keep their owner."""
    for root, dirs, files in os.walk(tree):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            info = os.lstat(name)
            if os.path.islink(name) or (not os.path.isdir(name) and info.st_nlink > 1):
                continue
            os.chown(name, uid, uid, follow_symlinks=False)


def _seed(workdir: Path, box: Box) -> None:
    for entry in workdir.iterdir():
        target = box.work / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)
    _hand_over(box.work, box.uid)


def _copy_back(box: Box, workdir: Path, limits: SandboxLimits) -> str:
    """Replace the caller's working folder with what the child left (plain files and folders);
    returns a note for the child's stderr when some of it could not be copied."""
    for entry in workdir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    try:
        copy_child_tree(box.work, workdir, max_bytes=limits.disk_mb * _MIB)
    except UnsafeOutput as exc:
        return f"\n[sia sandbox] the working folder was not copied back in full: {exc}\n"
    return ""


def run_sandboxed(argv: list[str], workdir: Path, env: dict[str, str], limits: SandboxLimits,
                  readable: Sequence[Path] = (), forward_ports: Sequence[int] = (),
                  record_dir: Path | None = None) -> SandboxResult:
    """Run `argv` in `workdir` with the environment `scrubbed_env(env, workdir)`.

    `readable` folders (copies made for this run: they are handed to the sandbox's uid) are
    visible read-only at their paths; `workdir` is the only writable folder that outlives the
    run. `forward_ports` on 127.0.0.1 are the only network the child reaches. With
    `record_dir`, the sandbox is recorded there while it lives (see `sandbox.boxes.sweep`).
    Raises SandboxUnavailable where isolation is impossible and not waived.
    """
    level = isolation_level(limits)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    readable = [Path(r).resolve() for r in readable]
    if bad := [r for r in readable if r == workdir or workdir in r.parents]:
        raise ValueError(f"readable paths inside the workdir would be writable: {bad}")
    if live.stopping():
        return SandboxResult(returncode=None, stdout="", stderr="not started: the run is stopping", timed_out=False,
                             wall_s=0.0, output_truncated=False, killed_leftovers=0, isolation=level, interrupted=True)
    if level == "unsafe":
        return _run_unsafe(argv, workdir, env, limits)
    lease = lease_uid()
    box = group = jail = proc = None
    interrupted = False
    record, timed_out, flooded = None, False, False
    try:
        box = Box.create(lease.uid, readable)
        group = CgroupBox.create(box.path.name, limits.memory_mb * _MIB, limits.processes)
        box.cgroup_dirs = [str(d) for d in group.dirs] if group else []
        record = box.record(record_dir)
        box.mount_work(limits.disk_mb)
        _seed(workdir, box)
        for folder in readable:
            _hand_over(folder, lease.uid)
        jail = NetJail.create(list(forward_ports)) if limits.isolate_network else None
        seccomp = filter_fd()
        command = bwrap_argv(argv, uid=lease.uid, workdir=workdir, work_source=box.work, readable=box.readable,
                             scratch_mb=limits.scratch_mb, seccomp_fd=seccomp,
                             own_network=limits.isolate_network and jail is None, gpu=limits.gpu)
        live.register(box, group)

        def setup() -> None:  # in the forked child, before exec: still root here
            if group:
                group.join()
            if jail:
                setns(jail.fd)
            bind_privately([(source, point) for source, point in box.readable])
            _set_rlimits(limits)
            os.setgroups([])
            os.setgid(lease.uid)
            os.setuid(lease.uid)

        start = time.monotonic()
        try:
            proc = subprocess.Popen(command, cwd="/", env=scrubbed_env(env, workdir), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                    pass_fds=(seccomp,), preexec_fn=setup)
        finally:
            os.close(seccomp)
        output, timed_out, flooded = _watch(proc, limits, start)
    finally:
        # A child that exited by itself took its PID namespace, and every daemon, with it.
        killed = len(_still_running(proc, group, lease.uid)) if (timed_out or flooded) else 0
        if proc is not None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # bubblewrap: its sandbox dies with it
        if group:
            group.kill()
        kill_uid(lease.uid)
        if jail:
            jail.close()
        note = ""
        if box:
            if box.work_mounted and proc is not None:
                note = _copy_back(box, workdir, limits)
            box.destroy()
            interrupted = live.unregister(box)
        if group:
            group.remove()
        for folder in readable:  # no file of the uid outlives its lease
            _hand_over(folder, os.geteuid())
        lease.release()
        if record:
            record.unlink(missing_ok=True)
    stdout, stderr, returncode = _finish(proc, output)
    if 128 < returncode < 128 + signal.NSIG:  # bubblewrap reports a child killed by signal N as 128 + N
        returncode = 128 - returncode
    return SandboxResult(
        returncode=returncode, stdout=stdout, stderr=stderr + note, timed_out=timed_out,
        wall_s=time.monotonic() - start, killed_leftovers=killed,
        network="isolated" if jail else ("none" if limits.isolate_network else "host"), isolation=level, uid=lease.uid,
        output_truncated=flooded or output.seen > limits.output_bytes, interrupted=interrupted)


def _still_running(proc: subprocess.Popen | None, group: CgroupBox | None, uid: int) -> set[int]:
    """The child's processes still running, bubblewrap and its init excluded."""
    if proc is None:
        return set()
    running = group.pids() if group else set(processes_of(uid))
    with suppress(OSError):
        running -= {int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()}
    return running - {proc.pid}


def _watch(proc: subprocess.Popen, limits: SandboxLimits, start: float) -> tuple["_Output", bool, bool]:
    """Pump the child's output until it exits, times out or floods; (output, timed out, flooded)."""
    output = _Output(proc, limits.output_bytes)
    deadline = start + limits.wall_timeout_s
    # WNOWAIT keeps the child a zombie, so its pid (= pgid) cannot be reused by a stranger
    # before the cleanup has used it.
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if (remaining := deadline - time.monotonic()) <= 0:
            return output, True, False
        output.pump(min(0.05, remaining))
        if output.seen > _KILL_FACTOR * limits.output_bytes:
            return output, False, True
    return output, False, False


def _finish(proc: subprocess.Popen, output: "_Output") -> tuple[str, str, int]:
    drain_end = time.monotonic() + _DRAIN_GRACE_S
    # Bounded: an unsafe-mode daemon may hold the pipes open forever.
    while time.monotonic() < drain_end and output.pump(0.05):
        pass
    stdout, stderr = output.texts()
    proc.stdout.close()
    proc.stderr.close()
    return stdout, stderr, proc.wait()


def _run_unsafe(argv: list[str], workdir: Path, env: dict[str, str], limits: SandboxLimits) -> SandboxResult:
    """No isolation beyond rlimits, a session and a wall clock (see the module docstring)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=workdir, env=scrubbed_env(env, workdir), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: _set_rlimits(limits))
    try:
        output, timed_out, flooded = _watch(proc, limits, start)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    stdout, stderr, returncode = _finish(proc, output)
    return SandboxResult(
        returncode=returncode, stdout=stdout, stderr=stderr, timed_out=timed_out, wall_s=time.monotonic() - start,
        killed_leftovers=0, network="host", isolation="unsafe",
        output_truncated=flooded or output.seen > limits.output_bytes)


@runtime_checkable
class SandboxRunner(Protocol):
    """Anything that can run a command the way `run_sandboxed` does."""

    def run(self, argv: list[str], workdir: Path, env: dict[str, str], limits: SandboxLimits,
            readable: Sequence[Path] = (), forward_ports: Sequence[int] = ()) -> SandboxResult: ...


class SubprocessSandbox:
    """The real `SandboxRunner`: `run_sandboxed`, recording live sandboxes in `record_dir`."""

    def __init__(self, record_dir: Path | None = None):
        self.record_dir = record_dir

    def run(self, argv: list[str], workdir: Path, env: dict[str, str], limits: SandboxLimits,
            readable: Sequence[Path] = (), forward_ports: Sequence[int] = ()) -> SandboxResult:
        return run_sandboxed(argv, workdir, env, limits, readable, forward_ports, self.record_dir)

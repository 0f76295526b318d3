"""Tests for sandbox.run_sandboxed: limits, scrubbing, kills and what the child can see.

Tests that depend on the isolation (fork bomb, daemon, file visibility) are skipped unless
running as root; the fork bomb must never run without it. The attacks of the sandbox review
(issue 15) are in test_sandbox_security.py.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sia.config import SandboxLimits
from sia.sandbox import (
    SandboxResult,
    SandboxRunner,
    SubprocessSandbox,
    run_sandboxed,
    scrubbed_env,
)

PY = sys.executable
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs the uid drop (run as root)")
FAST = SandboxLimits(wall_timeout_s=20)


def run_py(code: str, workdir: Path, limits: SandboxLimits = FAST, **kw) -> SandboxResult:
    return run_sandboxed([PY, "-c", textwrap.dedent(code)], workdir, kw.pop("env", {}), limits, **kw)


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except FileNotFoundError:
                continue
            ruid = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1]
            if int(ruid) == uid:
                pids.append(int(entry))
    return pids


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    wd = tmp_path / "work"
    wd.mkdir()
    return wd


def test_normal_run_output_and_exit_code(workdir: Path) -> None:
    res = run_py("""
        import os, sys
        print("hello out")
        print("hello err", file=sys.stderr)
        open("made.txt", "w").write("x")
        print("uid", os.getuid())
        sys.exit(3)
    """, workdir)
    assert res.returncode == 3 and not res.ok and not res.timed_out
    assert "hello out" in res.stdout and res.stderr == "hello err\n"
    assert not res.output_truncated and res.killed_leftovers == 0
    assert (workdir / "made.txt").read_text() == "x"
    if IS_ROOT:
        assert f"uid {res.uid}" in res.stdout and 61000 <= res.uid < 65000
    assert run_py("print('ok')", workdir).ok


def test_env_is_scrubbed(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted")
    res = run_py("import os, json; print(json.dumps(dict(os.environ)))", workdir,
                 env={"GATEWAY_URL": "http://x"})
    env = json.loads(res.stdout)
    assert "OPENAI_API_KEY" not in env and "sk-planted" not in res.stdout
    assert env["HOME"] == str(workdir.resolve()) and env["GATEWAY_URL"] == "http://x"
    assert env["PATH"] == f"{Path(PY).parent}:/usr/bin:/bin"
    expected = {"PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "GATEWAY_URL"}
    # Python's C-locale coercion may add LC_CTYPE; bubblewrap sets PWD (the working folder)
    assert set(env) - {"LC_CTYPE", "PWD"} == expected
    assert set(scrubbed_env({"A": "1"})) == expected - {"HOME", "GATEWAY_URL"} | {"A"}


def test_timeout_kills_child_and_grandchild(workdir: Path) -> None:
    res = run_py("""
        import subprocess, time
        p = subprocess.Popen(["sleep", "100"])
        print(p.pid, flush=True)
        time.sleep(100)
    """, workdir, SandboxLimits(wall_timeout_s=1.0))
    assert res.timed_out and not res.ok and res.returncode == -9
    assert res.wall_s < 5
    assert res.killed_leftovers >= 1
    if res.uid is None:  # unsafe mode: the grandchild's pid is a host pid
        grandchild = int(res.stdout.split()[0])
        deadline = time.monotonic() + 2
        while alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(grandchild)
    else:  # its pid is one of the sandbox's PID namespace: look for anything of the sandbox's uid
        assert uid_processes(res.uid) == []


@needs_root
def test_double_forked_daemon_is_killed(workdir: Path) -> None:
    # The daemon leaves the process group and keeps stdout open: it dies with the sandbox's
    # PID namespace, and the run must still return promptly.
    res = run_py("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                while True:
                    with open("beat.txt", "a") as f:
                        f.write("x")
                    time.sleep(0.02)
            os._exit(0)
        time.sleep(0.3)
        print("parent exits")
    """, workdir)
    assert res.ok and "parent exits" in res.stdout
    assert res.wall_s < 5
    beat = workdir / "beat.txt"
    size = beat.stat().st_size
    assert size > 0
    time.sleep(0.3)
    assert beat.stat().st_size == size
    assert res.uid is not None and uid_processes(res.uid) == []


def test_memory_bomb_fails_without_hurting_parent(workdir: Path) -> None:
    res = run_py("""
        try:
            b = bytearray(10 * 1024**3)
        except MemoryError:
            print("MemoryError")
            raise
    """, workdir, SandboxLimits(wall_timeout_s=20, memory_mb=512))
    assert res.returncode == 1 and "MemoryError" in res.stdout and not res.timed_out
    assert bytearray(64 * 1024 * 1024)  # the parent can still allocate


def test_output_bomb_is_truncated_and_killed(workdir: Path) -> None:
    limits = SandboxLimits(wall_timeout_s=20, output_bytes=10_000)
    res = run_py("""
        import sys
        while True:
            sys.stdout.write("y" * 999 + "\\n")
            sys.stderr.write("e" * 99 + "\\n")
    """, workdir, limits)
    assert res.output_truncated and not res.timed_out and res.returncode == -9
    assert len(res.stdout) + len(res.stderr) <= limits.output_bytes
    assert res.stdout.endswith("y\n") and res.wall_s < 5


def test_output_within_limit_is_not_truncated(workdir: Path) -> None:
    res = run_py("print('z' * 5000)", workdir, SandboxLimits(output_bytes=10_000))
    assert res.ok and not res.output_truncated and len(res.stdout) == 5001


@needs_root
def test_fork_bomb_is_contained(workdir: Path) -> None:
    limits = SandboxLimits(wall_timeout_s=2.0, processes=32)
    # Refuse to start the bomb unless the uid drop and the limit really hold.
    res = run_py("""
        import os, resource
        assert os.getuid() != 0 and os.geteuid() != 0
        assert resource.getrlimit(resource.RLIMIT_NPROC) == (32, 32)
        print("guard ok", flush=True)
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """, workdir, limits)
    assert "guard ok" in res.stdout, res.stderr
    assert res.timed_out and res.killed_leftovers >= 1
    assert uid_processes(res.uid) == []
    # The next run (whatever uid it leases) must be able to fork.
    res = run_py("""
        import os
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        print("still here")
    """, workdir, SandboxLimits(wall_timeout_s=20, processes=32))
    assert res.stdout == "still here\n", res.stderr


@needs_root
def test_private_dir_invisible_and_readable_paths_read_only(tmp_path: Path, workdir: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret.txt").write_text("s3cret")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "x.txt").write_text("public")
    os.chmod(data, 0o700)
    os.chmod(data / "sub" / "x.txt", 0o600)
    res = run_py(f"""
        def attempt(label, fn):
            try:
                fn()
                print(label, "ok")
            except OSError as exc:
                print(label, type(exc).__name__)
        attempt("secret", lambda: open({str(private / 'secret.txt')!r}).read())
        attempt("read", lambda: print(open({str(data / 'sub' / 'x.txt')!r}).read()))
        attempt("write", lambda: open({str(data / 'new.txt')!r}, "w"))
        attempt("overwrite", lambda: open({str(data / 'sub' / 'x.txt')!r}, "a"))
        attempt("workdir", lambda: open("inside.txt", "w").write("w"))
    """, workdir, readable=[data])
    lines = res.stdout.splitlines()
    assert "secret FileNotFoundError" in lines and "s3cret" not in res.stdout  # not mounted at all
    assert "public" in lines and "read ok" in lines
    assert "write OSError" in lines and "overwrite OSError" in lines  # EROFS: a read-only mount
    assert "workdir ok" in lines
    assert not (data / "new.txt").exists()


def test_readable_inside_workdir_is_rejected(workdir: Path) -> None:
    with pytest.raises(ValueError):
        run_py("pass", workdir, readable=[workdir / "sub"])


def test_subprocess_sandbox_is_a_runner(workdir: Path) -> None:
    runner = SubprocessSandbox()
    assert isinstance(runner, SandboxRunner)
    assert runner.run([PY, "-c", "print(6 * 7)"], workdir, {}, FAST).stdout == "42\n"


def test_limits_validate_and_document() -> None:
    assert all(f.description for f in SandboxLimits.model_fields.values())
    assert SandboxLimits.model_validate_json(SandboxLimits().model_dump_json()) == SandboxLimits()


@needs_root
def test_network_namespace_lets_only_the_forwarded_port_through(workdir: Path) -> None:
    import http.server
    import socket
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    port, other_port = server.server_address[1], other.getsockname()[1]
    code = f"""
        import socket
        for host, port in (("127.0.0.1", {port}), ("127.0.0.1", {other_port}), ("1.1.1.1", 53), ("pypi.org", 443)):
            try:
                socket.create_connection((host, port), timeout=3).close()
                print(host, port, "open")
            except OSError as exc:
                print(host, port, "closed", type(exc).__name__)
        """
    try:
        isolated = run_py(code, workdir, forward_ports=[port])
        shared = run_py(code, workdir, SandboxLimits(wall_timeout_s=20, isolate_network=False), forward_ports=[port])
    finally:
        server.shutdown()
        other.close()
    assert isolated.ok and isolated.network == "isolated", isolated.stderr
    lines = isolated.stdout.splitlines()
    assert lines[0] == f"127.0.0.1 {port} open"
    assert all(" closed " in line for line in lines[1:]), lines
    assert shared.network == "host" and f"127.0.0.1 {other_port} open" in shared.stdout


def test_read_child_file_reads_only_plain_files(tmp_path: Path) -> None:
    from sia.sandbox.files import UnsafeOutput, read_child_file

    out = tmp_path / "out"
    out.mkdir()
    (out / "ok.csv").write_text("id,label\n")
    (tmp_path / "secret").write_text("root only")
    (out / "link.csv").symlink_to(tmp_path / "secret")
    os.mkfifo(out / "fifo.csv")
    (out / "dir.csv").mkdir()
    (out / "big.csv").write_bytes(b"x" * 2048)
    (tmp_path / "linked-out").symlink_to(out)
    assert read_child_file(out, "ok.csv") == b"id,label\n"
    assert read_child_file(out, "missing.csv") is None
    assert read_child_file(tmp_path / "no-such-dir", "ok.csv") is None
    for name, message in [("link.csv", "plain file"), ("fifo.csv", "not a regular file"),
                          ("dir.csv", "not a regular file"), ("big.csv", "at most 1024")]:
        with pytest.raises(UnsafeOutput, match=message):
            read_child_file(out, name, max_bytes=1024)
    with pytest.raises(UnsafeOutput, match="not a plain directory"):
        read_child_file(tmp_path / "linked-out", "ok.csv")


def test_copy_child_tree_copies_plain_files_and_folders_only(tmp_path: Path) -> None:
    from sia.sandbox.files import UnsafeOutput, copy_child_tree

    out = tmp_path / "out"
    (out / "results" / "deep").mkdir(parents=True)
    (out / "submission.csv").write_text("id,label\n")
    (out / "results" / "deep" / "a.json").write_text("{}")
    (tmp_path / "secret").write_text("root only")
    (out / "link.csv").symlink_to(tmp_path / "secret")
    (out / "linked-dir").symlink_to(tmp_path)
    os.mkfifo(out / "fifo.csv")
    copied = copy_child_tree(out, tmp_path / "copy")
    found = sorted(str(p.relative_to(tmp_path / "copy")) for p in (tmp_path / "copy").rglob("*"))
    assert found == ["results", "results/deep", "results/deep/a.json", "submission.csv"] and copied == 11
    assert copy_child_tree(tmp_path / "missing", tmp_path / "copy2") == 0 and not (tmp_path / "copy2").exists()
    with pytest.raises(UnsafeOutput, match=r"submission.csv is 9 bytes \(at most 8\)"):
        copy_child_tree(out, tmp_path / "copy3", max_bytes=10)
    with pytest.raises(UnsafeOutput, match="more than 1 files"):
        copy_child_tree(out, tmp_path / "copy4", max_files=1)
    with pytest.raises(UnsafeOutput, match="deeper than 1"):
        copy_child_tree(out, tmp_path / "copy5", max_depth=1)
    (tmp_path / "linked-out").symlink_to(out)
    with pytest.raises(UnsafeOutput, match="not a plain directory"):
        copy_child_tree(tmp_path / "linked-out", tmp_path / "copy6")

"""The bubblewrap command line for one sandbox: what its filesystem holds and which namespaces
it gets. bubblewrap (https://github.com/containers/bubblewrap, Debian `bubblewrap`) is the
sandbox Flatpak runs every application in; we only choose its arguments.

The sandbox sees: the system's programs and libraries (/usr and the /bin, /lib links), a few
files of /etc it needs to run (no secrets: not /etc as a whole), the Python installation (the
venv and its base interpreter) and SIA's own package folders read-only, its readable inputs
read-only, its working folder read-write, fresh size-capped tmpfs at /tmp, /var/tmp, /dev/shm
and /run/lock, a minimal /dev and its own /proc. Nothing else of the host exists in it: not
the task folder, not the run folder, not other sandboxes' folders.

Namespaces: user (the box's uid outside and inside; no further user namespaces), PID (the
sandbox dies whole with its init), IPC (no shared SysV or POSIX IPC with anyone), UTS, cgroup,
mount; the network namespace is the one the runner puts bubblewrap in (only the gateway's port
answers there) or a fresh empty one. bubblewrap sets no_new_privs, drops every capability,
starts a new session (no terminal injection) and dies with its parent.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "hosts", "nsswitch.conf", "localtime",
             "ssl", "ca-certificates", "alternatives", "mime.types")
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@lru_cache(maxsize=1)
def python_paths() -> list[str]:
    """Folders the interpreter, its import path (site-packages and what .pth files add, as a
    fresh interpreter sees it) and SIA's own modules (for `python -m sia.…` children) live in."""
    paths = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix), sys.prefix, sys.base_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    fresh = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"], cwd="/",
                           env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60, check=True)
    paths.update(os.path.realpath(p) for p in json.loads(fresh.stdout) if p and os.path.isabs(p))
    spec = importlib.util.find_spec("sia")
    for location in (spec.submodule_search_locations or []) if spec else []:
        paths.add(os.path.realpath(location))
        for sub in ("cli", "graph", "nodes", "finetune", "tasks", "checkpoints", "gateway", "sandbox"):
            sub_spec = importlib.util.find_spec(f"sia.{sub}")
            paths.update(os.path.realpath(p) for p in (sub_spec.submodule_search_locations or []) if sub_spec)
    # A folder inside another one is bound with it; bind only the outermost of each chain.
    ordered = sorted(p for p in paths if os.path.isdir(p))
    return [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]


def _root_entries() -> list[str]:
    """/usr bound, and each of /bin, /sbin, /lib* recreated as the link it is (usr-merged systems)
    or bound where it is a real folder."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in sorted(glob.glob("/bin") + glob.glob("/sbin") + glob.glob("/lib*")):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def bwrap_argv(argv: list[str], *, uid: int, workdir: Path, work_source: Path, readable: list[tuple[str, str]],
               scratch_mb: int, seccomp_fd: int, own_network: bool, gpu: bool) -> list[str]:
    """The full command: bubblewrap, its options, then `argv`. `readable` holds (path the
    sandbox sees, host path bubblewrap binds from)."""
    args = [bwrap_path() or "bwrap", "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
            "--unshare-cgroup-try", "--uid", str(uid), "--gid", str(uid), "--disable-userns",
            "--die-with-parent", "--new-session", "--hostname", "sia-sandbox", "--seccomp", str(seccomp_fd)]
    if own_network:
        args.append("--unshare-net")
    args += _root_entries()
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for path in SCRATCH:
        args += ["--perms", "1777", "--size", str(scratch_mb * 1024 * 1024), "--tmpfs", path]
    if gpu:
        for dev in sorted(glob.glob("/dev/nvidia*")) + ["/dev/dri"]:
            args += ["--dev-bind-try", dev, dev]
        args += ["--ro-bind-try", "/sys", "/sys", "--ro-bind-try", "/proc/driver/nvidia", "/proc/driver/nvidia"]
    for path in python_paths():
        args += ["--ro-bind", path, path]
    for inside, source in readable:
        args += ["--ro-bind", source, inside]
    # The root itself is bubblewrap's tmpfs, of no size limit: read-only, so only the capped
    # working folder and scratch tmpfs take writes.
    args += ["--bind", str(work_source), str(workdir), "--remount-ro", "/", "--chdir", str(workdir), "--"]
    return args + list(argv)

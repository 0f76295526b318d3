"""One control group per sandbox: memory (tmpfs pages included) and process count bounded by
the kernel, and every process of the sandbox found and killed through it.

cgroup v2 (one unified hierarchy) is used where `/sys/fs/cgroup/cgroup.controllers` exists and
the memory and pids controllers can be enabled for our subtree; otherwise cgroup v1, where the
`memory` and `pids` hierarchies are mounted (as on these machines). Creating groups needs root
(or a delegated subtree); `CgroupBox.create` returns None where neither works, and the sandbox
falls back to rlimits and says so.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import suppress
from pathlib import Path

from sia.sandbox.processes import kill_until_gone

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PARENT = "sia"  # every sandbox group lives under <hierarchy>/sia/, so a sweep finds them all


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


class CgroupBox:
    """The group(s) of one sandbox. `join()` runs in the child before exec; `kill()` and
    `remove()` in the parent after the run (or in a sweep after a crash)."""

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs

    @staticmethod
    def available() -> bool:
        """Whether sandbox groups can be made here (root, and v2 or v1 memory+pids mounted)."""
        if os.geteuid() != 0:
            return False
        if _v2():
            return True
        return all((ROOT / c / "cgroup.procs").exists() for c in ("memory", "pids"))

    @classmethod
    def create(cls, name: str, memory_bytes: int, processes: int) -> "CgroupBox | None":
        """A fresh group named `name` with the two limits, or None if groups cannot be made here."""
        try:
            box = cls._create_v2(name) if _v2() else cls._create_v1(name)
        except OSError as exc:
            log.info("sandbox: no cgroup (%s); memory and processes are bounded by rlimits only", exc)
            return None
        if box is None:
            return None
        try:
            box._limit(memory_bytes, processes)
        except OSError as exc:
            box.remove()
            log.info("sandbox: cannot set cgroup limits (%s); rlimits only", exc)
            return None
        return box

    @classmethod
    def _create_v1(cls, name: str) -> "CgroupBox | None":
        if not all((ROOT / c / "cgroup.procs").exists() for c in ("memory", "pids")):
            return None
        dirs = []
        for controller in ("memory", "pids"):
            parent = ROOT / controller / PARENT
            parent.mkdir(exist_ok=True)
            (parent / name).mkdir()
            dirs.append(parent / name)
        return cls(dirs)

    @classmethod
    def _create_v2(cls, name: str) -> "CgroupBox | None":
        parent = ROOT / PARENT
        parent.mkdir(exist_ok=True)
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        if not {"memory", "pids"} <= set(enabled):
            _write(parent / "cgroup.subtree_control", "+memory +pids")
        (parent / name).mkdir()
        return cls([parent / name])

    def _limit(self, memory_bytes: int, processes: int) -> None:
        for d in self.dirs:
            if (d / "memory.max").exists():  # v2
                _write(d / "memory.max", str(memory_bytes))
                with suppress(OSError):
                    _write(d / "memory.swap.max", "0")
                _write(d / "pids.max", str(processes))
            elif (d / "memory.limit_in_bytes").exists():
                _write(d / "memory.limit_in_bytes", str(memory_bytes))
                with suppress(OSError):  # only with swap accounting
                    _write(d / "memory.memsw.limit_in_bytes", str(memory_bytes))
            elif (d / "pids.max").exists():
                _write(d / "pids.max", str(processes))

    def join(self) -> None:
        """Move the calling process into the group(s): called in the forked child, before exec."""
        pid = str(os.getpid())
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as f:
                f.write(pid)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with suppress(OSError):
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        return found

    def kill(self, rounds: int = 300) -> int:
        """SIGKILL everything in the group until it is empty; returns how many were killed."""
        for d in self.dirs:
            if (d / "cgroup.kill").exists():  # v2: atomic, a forking loop cannot outrun it
                with suppress(OSError):
                    _write(d / "cgroup.kill", "1")
        return kill_until_gone(self.pids, rounds)

    def remove(self) -> None:
        """Remove the (empty) group(s); a group still holding processes is killed first."""
        for d in self.dirs:
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY: the last processes are still exiting
                    self.kill(rounds=10)
                    time.sleep(0.02)

"""Finding and killing a sandbox's processes from the host (by uid or by control group)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

log = logging.getLogger(__name__)


def processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes whose owner is `uid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(OSError):
            if os.stat(f"/proc/{entry}").st_uid == uid:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
                if stat_line[stat_line.rfind(")") + 2] not in "ZX":
                    found.append(int(entry))
    return found


def kill_until_gone(find: Callable[[], Iterable[int]], rounds: int = 300) -> int:
    """SIGKILL whatever `find()` returns until it returns nothing (a forking loop loses the race
    within a few rounds); returns how many distinct pids were killed."""
    killed: set[int] = set()
    for _ in range(rounds):
        if not (pids := set(find())):
            return len(killed)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.01)
    log.warning("sandbox: processes survived %d kill rounds", rounds)
    return len(killed)

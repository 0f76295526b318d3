"""The sandboxes this process is running, so that stopping the process stops them: Ctrl-C or a
signal kills them (`kill_live_sandboxes`), marks their runs as interrupted and lets no new one
start; an interpreter exit (a signal turned into SystemExit while a sandbox runs in another
thread) still kills and frees them."""

from __future__ import annotations

import atexit
import threading

from sia.sandbox.boxes import Box
from sia.sandbox.cgroups import CgroupBox
from sia.sandbox.uids import kill_uid

_LIVE: dict[str, tuple[Box, CgroupBox | None]] = {}
_INTERRUPTED: set[str] = set()  # boxes kill_live_sandboxes killed, until their run returns
_STOPPING = threading.Event()  # set by kill_live_sandboxes: no new sandbox starts in this process


def register(box: Box, group: CgroupBox | None) -> None:
    _LIVE[box.path.name] = (box, group)


def unregister(box: Box) -> bool:
    """Forget a finished box; whether kill_live_sandboxes interrupted its run."""
    _LIVE.pop(box.path.name, None)
    interrupted = box.path.name in _INTERRUPTED
    _INTERRUPTED.discard(box.path.name)
    return interrupted


def stopping() -> bool:
    return _STOPPING.is_set()


def _kill(box: Box, group: CgroupBox | None) -> None:
    if group:
        group.kill()
    kill_uid(box.uid)


def kill_live_sandboxes() -> None:
    """Kill every sandbox of this process now (on SIGTERM, SIGHUP or Ctrl-C); the threads that
    run them see their child end and clean up as usual."""
    _STOPPING.set()  # a node still running in a worker thread must not start the next agent
    for name, (box, group) in list(_LIVE.items()):
        _INTERRUPTED.add(name)
        _kill(box, group)


def allow_new_sandboxes() -> None:
    """Undo kill_live_sandboxes' stop for this process (a test, or a driver that goes on)."""
    _STOPPING.clear()


@atexit.register
def _cleanup_live() -> None:
    for box, group in list(_LIVE.values()):
        _kill(box, group)
        if group:
            group.remove()
        box.destroy()

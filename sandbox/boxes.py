"""What one sandbox owns on the host, recorded before it starts and removed after it ends.

A box is a root-owned folder `<tmp>/sia-box-XXXX` (mode 0711: other users can neither list it
nor, without the random name, reach it) holding:

- `work/`: a tmpfs of `limits.disk_mb`, mode 0700, owned by the box's uid, seeded with a copy of
  the caller's working folder and bound into the sandbox at that folder's path. Writes past the
  cap fail inside the sandbox (ENOSPC: the item's error), never on the host's disk. After the run
  its regular files and folders (no links, FIFOs or devices) are copied back to the caller.
- `ro0/`, `ro1/`, ...: mount points the child binds the caller's `readable` folders onto, in a
  mount namespace of its own, so bubblewrap (running as the box's uid) can reach them although
  their host parents are private; the mounts never exist in the host's namespace.

The box, its uid lease and its control group are written to `<record_dir>/<box>.json` before the
sandbox starts, so a run killed with SIGKILL leaves a record that `sweep` (at the start of
`sia run` and `sia resume`) uses to kill what is left and free what it held. The same goes for
the scratch folder an agent run's view and working folder live in (`recorded_scratch`).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sia.files import private_scratch, write_json_atomic
from sia.sandbox.cgroups import CgroupBox
from sia.sandbox.uids import kill_uid, uid_is_leased

log = logging.getLogger(__name__)

MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
MNT_DETACH, CLONE_NEWNS = 0x2, 0x00020000
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


def umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def bind_privately(pairs: list[tuple[str, str]]) -> None:
    """In the forked child (root, before exec): a mount namespace of its own in which each
    (source, mount point) is bound; nothing propagates back to the host."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    for source, target in pairs:
        mount(source, target, None, MS_BIND | MS_REC)


@dataclass
class Box:
    """The host side of one sandbox; `to_record`/`from_record` round-trip through the JSON record."""

    path: Path
    uid: int
    cgroup_dirs: list[str] = field(default_factory=list)
    work_mounted: bool = False
    readable: list[tuple[str, str]] = field(default_factory=list)  # (caller's folder, mount point in the box)

    @property
    def work(self) -> Path:
        return self.path / "work"

    @classmethod
    def create(cls, uid: int, readable: list[Path]) -> "Box":
        box = cls(Path(tempfile.mkdtemp(prefix="sia-box-")), uid)
        os.chmod(box.path, 0o711)
        box.work.mkdir(mode=0o700)
        for i, folder in enumerate(readable):
            (box.path / f"ro{i}").mkdir(mode=0o700)
            box.readable.append((str(folder), str(box.path / f"ro{i}")))
        return box

    def mount_work(self, disk_mb: int) -> None:
        """The size-capped tmpfs for the working folder (root only)."""
        mount("tmpfs", str(self.work), "tmpfs", MS_NOSUID | MS_NODEV,
              f"size={disk_mb}m,mode=0700,uid={self.uid},gid={self.uid}")
        self.work_mounted = True

    def record(self, record_dir: Path | None) -> Path | None:
        """Write the record (before the working folder is mounted: a recorded box is always
        treated as maybe mounted, and unmounting what is not mounted fails harmlessly)."""
        if record_dir is None:
            return None
        record_dir.mkdir(parents=True, exist_ok=True)
        path = record_dir / f"{self.path.name}.json"
        fields = {k: v for k, v in asdict(self).items() if k != "work_mounted"}
        write_json_atomic(path, {**fields, "path": str(self.path)})
        return path

    @classmethod
    def from_record(cls, data: dict) -> "Box":
        return cls(Path(data["path"]), int(data["uid"]), list(data.get("cgroup_dirs", [])), True,
                   [tuple(p) for p in data.get("readable", [])])

    def destroy(self) -> None:
        """Unmount and delete the box (its processes must be gone)."""
        if self.work_mounted:
            with suppress(OSError):
                umount(str(self.work))
            self.work_mounted = False
        if self.path.name.startswith("sia-box-"):
            shutil.rmtree(self.path, ignore_errors=True)


SCRATCH_RECORD_PREFIX = "scratch-"


@contextmanager
def recorded_scratch(record_dir: Path, prefix: str) -> Iterator[Path]:
    """A fresh 0700 temporary folder, removed when the block ends. While it exists, a record in
    `record_dir` names it, locked by this process, so that `sweep` removes the folder if the
    process is killed before its own cleanup (the lock, not a pid, tells a live owner)."""
    record_dir.mkdir(parents=True, exist_ok=True)
    with private_scratch(prefix) as scratch:
        record = record_dir / f"{SCRATCH_RECORD_PREFIX}{scratch.name}.json"
        pending = record_dir / f".pending-{scratch.name}"  # a name sweep does not look at
        fd = None
        try:
            # Locked and written before it takes the name sweep looks for: sweep never sees a record
            # that is unlocked or incomplete while its owner lives.
            fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, json.dumps({"path": str(scratch)}).encode())
            os.rename(pending, record)
            yield scratch
        finally:  # the folder before its record: a kill in between leaves the record for sweep
            shutil.rmtree(scratch, ignore_errors=True)
            record.unlink(missing_ok=True)
            pending.unlink(missing_ok=True)
            if fd is not None:
                os.close(fd)


def _temp_dirs() -> set[Path]:
    return {Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")}


def _sweep_scratch(record: Path) -> bool:
    """Remove the scratch folder `record` names, and the record, if its owner is gone (its lock
    is free); True when both are gone."""
    try:
        fd = os.open(record, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its process is alive
        try:
            path = Path(json.loads(os.read(fd, 4096))["path"])
        except (ValueError, KeyError, TypeError):
            log.warning("sandbox: unreadable scratch record %s; removed", record)
            record.unlink(missing_ok=True)
            return False
        # Only a folder of ours in a temporary folder: a record is no licence to delete anything else.
        if path.exists() and not (path.name.startswith("sia-") and path.parent in _temp_dirs()):
            log.warning("sandbox: %s names %s, which is not a scratch folder of ours; left alone", record, path)
            return False
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            log.warning("sandbox: could not remove the leftover scratch folder %s", path)
            return False
        record.unlink(missing_ok=True)
        log.warning("sandbox: swept leftover scratch folder %s", path)
        return True
    finally:
        os.close(fd)


def sweep(record_dir: Path) -> int:
    """Kill and free what sandboxes recorded in `record_dir` left behind (their parent died
    before cleaning up), and remove agent runs' scratch folders whose process is gone; boxes
    whose uid is still leased by a live process are left alone. Returns how many records were
    swept."""
    if not record_dir.is_dir():
        return 0
    swept = sum(map(_sweep_scratch, sorted(record_dir.glob(f"{SCRATCH_RECORD_PREFIX}*.json"))))
    for path in sorted(record_dir.glob("sia-box-*.json")):
        try:
            box = Box.from_record(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("sandbox: unreadable record %s (%s); removed", path, exc)
            path.unlink(missing_ok=True)
            continue
        if uid_is_leased(box.uid):
            continue
        group = CgroupBox([Path(d) for d in box.cgroup_dirs])
        killed = group.kill() + kill_uid(box.uid)
        group.remove()
        box.destroy()
        path.unlink(missing_ok=True)
        log.warning("sandbox: swept leftover %s (uid %d, %d processes killed)", box.path.name, box.uid, killed)
        swept += 1
    return swept

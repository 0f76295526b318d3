"""Every path of a run, built in one place: runs/RUN/{config.json, checkpoints.sqlite, run.db,
gen_N/, adapters/gen_N/}. The run folder is private (0700): sandboxed agents cannot read it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sia.files import read_json, write_text_atomic

# nodes/*.py still import write_text_atomic and write_json_atomic from here; their home is sia.files.


@dataclass(frozen=True)
class RunPaths:
    runs_dir: Path
    run_id: str

    @property
    def root(self) -> Path:
        return Path(self.runs_dir) / self.run_id

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints.sqlite"

    @property
    def run_db(self) -> Path:
        return self.root / "run.db"

    @property
    def sandboxes(self) -> Path:
        """Records of live sandboxes (see sandbox.boxes): what a killed run left to sweep."""
        return self.root / "sandboxes"

    @property
    def isolation(self) -> Path:
        """The weakest sandbox isolation any process driving this run used (see sandbox.runner)."""
        return self.root / "isolation.json"

    def recorded_isolation(self) -> str | None:
        """What `isolation` holds; None for a run no `sia run`/`sia resume` drove (a script, Studio)."""
        return read_json(self.isolation).get("isolation")

    @property
    def timings(self) -> Path:
        """One JSON line per agent run, per training and per node run: where the run's time went."""
        return self.root / "timings.jsonl"

    @property
    def now(self) -> Path:
        """The node in flight: {node, generation, started, pid}, rewritten as each node starts (nodes/progress.py)."""
        return self.root / "now.json"

    @property
    def paused(self) -> Path:
        """Present while a budget holds the run paused: {reason, generation} (nodes/budget.py)."""
        return self.root / "paused.json"

    def paused_reason(self) -> str | None:
        """Why a budget holds the run paused (what `paused` says); None when it is not paused."""
        if not self.paused.exists():
            return None
        return str(read_json(self.paused).get("reason") or "paused (no reason recorded)")

    def tag_salt(self) -> str:
        """A random secret of this run (created once), so agents cannot recompute item tags."""
        path = self.root / ".tag_salt"
        if not path.exists():
            write_text_atomic(path, os.urandom(16).hex())
        return path.read_text().strip()

    def gen(self, n: int) -> Path:
        return self.root / f"gen_{n}"

    def adapter(self, n: int) -> Path:
        return self.root / "adapters" / f"gen_{n}"

    def create(self) -> "RunPaths":
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        return self


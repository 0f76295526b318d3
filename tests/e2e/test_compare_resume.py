"""Kill `sia compare` with SIGKILL in the middle of its second arm, then run the same command
again: the finished arm is not run again (its run.db rows are untouched, no sandbox runs for it),
the killed arm continues from its checkpoint (generation 1 not redone), the table is made, and
`sia compare --resume ID` afterwards runs nothing at all."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes import fake_config, fake_model_cache, make_tiny_task

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def driver(runs: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), SIA_CACHE_DIR=str(fake_model_cache(runs.parent / "cache")))
    return subprocess.Popen([sys.executable, "-m", "tests.e2e.compare_driver", str(runs), *args], cwd=REPO, env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def rows(runs: Path, arm: str, table: str = "generations") -> list[tuple]:
    with sqlite3.connect(runs / "compares" / "c" / "arms" / arm / "run.db") as db:
        return db.execute(f"select * from {table} order by 1, 2, 3, 4, 5").fetchall()


def events(runs: Path) -> list[str]:
    return (runs / "events.log").read_text().splitlines()


def test_kill_mid_arm_then_the_same_command_resumes(tmp_path):
    task = make_tiny_task(tmp_path / "task")
    config = tmp_path / "config.json"
    config.write_text(fake_config(tmp_path).model_dump_json())
    runs = tmp_path / "runs"
    runs.mkdir()
    command = ["--", "compare", "--task-dir", str(task), "--policies", "scaffold-only,llm", "--generations", "2",
               "--compare-id", "c", "--config", str(config), "--runs-dir", str(runs)]

    proc = driver(runs, "--pause-in", "llm-s0", *command)
    deadline = time.time() + 300
    while not (runs / "paused").exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "the driver never reached the kill point"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    folder = runs / "compares" / "c"
    finished = {t: rows(runs, "scaffold-only-s0", t) for t in ("generations", "item_results")}
    killed_gen1 = rows(runs, "llm-s0")
    assert [r[1] for r in finished["generations"]] == [1, 2] and [r[1] for r in killed_gen1] == [1]
    assert not (folder / "table.json").exists()
    assert "running_since" in json.loads((folder / "timing.json").read_text())["llm-s0"]
    before = events(runs)
    assert "sandbox llm-s0 g1" in before and "sandbox scaffold-only-s0 g2" in before

    out = finish(driver(runs, *command))  # the same command again
    after = events(runs)[len(before):]
    assert "scaffold-only-s0: finished earlier, not run again" in out and "continuing" in out
    assert {t: rows(runs, "scaffold-only-s0", t) for t in finished} == finished  # `created` included: not rewritten
    assert not [e for e in after if e.startswith("sandbox scaffold-only-s0")]
    assert "sandbox llm-s0 g1" not in after and "sandbox llm-s0 g2" in after  # continued, not restarted
    assert rows(runs, "llm-s0")[0] == killed_gen1[0]
    table = json.loads((folder / "table.json").read_text())
    assert [r["key"] for r in table["rows"]] == ["initial", "H", "W+H"]
    assert table["rows"][2]["incumbents"] == {"llm-s0": {"generation": 2, "adapter": "adapters/gen_2"}}
    timing = json.loads((folder / "timing.json").read_text())
    assert timing["llm-s0"]["killed"] == 1 and timing["llm-s0"]["loop_s"] > 0 and "running_since" not in timing["llm-s0"]

    done = events(runs)
    out = finish(driver(runs, "--", "compare", "--resume", "c", "--runs-dir", str(runs)))
    assert events(runs)[len(done):] == ["start"] and out.count("finished earlier, not run again") == 2
    assert json.loads((folder / "table.json").read_text())["rows"] == table["rows"]

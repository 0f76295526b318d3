"""Parent-side interface to LoRA training.

`SubprocessTrainer` runs `python -m sia.finetune.train_lora` in a child process (its own session,
so it can be killed as a group), relays its JSON progress events to a callback and returns
the run summary. Nothing heavy is imported here: torch, TRL and Unsloth only ever load in
the child. Calling `train` again with the same arguments after a crash or a kill resumes
from the child's last checkpoint in OUT/trainer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sia.config import FinetuneConfig
from sia.files import write_text_atomic

CONFIG_NAME = "finetune_config.json"
LOG_NAME = "train.log"
SUMMARY_NAME = "train_summary.json"

EventCallback = Callable[[dict], None]


class TrainingFailed(RuntimeError):
    """The training process failed; `str()` gives the reason and the tail of its stderr."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr_tail: str = "",
                 log_path: Path | None = None) -> None:
        self.reason = message
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.log_path = log_path
        text = message
        if stderr_tail:
            text += f"\n--- last lines of {log_path or 'stderr'} ---\n{stderr_tail}"
        super().__init__(text)


class Trainer(Protocol):
    """Anything that trains a LoRA adapter for `base` on `dataset` into `out`."""

    def train(self, dataset: Path, base: Path, out: Path, config: FinetuneConfig,
              on_event: EventCallback | None = None) -> dict:
        """Train, write OUT/adapter and OUT/train_summary.json, and return the summary."""
        ...


def _tail(path: Path, start: int, lines: int) -> str:
    """Last `lines` lines written to `path` after byte offset `start` (this run's share of the log)."""
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").rstrip().splitlines()[-lines:])


class SubprocessTrainer:
    """Runs `finetune.train_lora` as a child process.

    `python` picks the interpreter (default: this one); `timeout_s` kills a run that takes
    longer; `extra_env` adds variables for the child. The child's stderr is appended to
    OUT/train.log. While a run is going, `self.process` is its Popen object.
    """

    def __init__(self, python: str | os.PathLike | None = None, timeout_s: float | None = None,
                 extra_env: dict[str, str] | None = None, tail_lines: int = 30) -> None:
        self.python = str(python or sys.executable)
        self.timeout_s = timeout_s
        self.extra_env = dict(extra_env or {})
        self.tail_lines = tail_lines
        self.process: subprocess.Popen | None = None

    def command(self, dataset: Path, base: Path, out: Path) -> list[str]:
        return [self.python, "-m", "sia.finetune.train_lora", "--dataset", str(dataset), "--base", str(base),
                "--out", str(out), "--config", str(out / CONFIG_NAME)]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is only ours
            except ProcessLookupError:
                pass

    def train(self, dataset: Path, base: Path, out: Path, config: FinetuneConfig,
              on_event: EventCallback | None = None) -> dict:
        dataset, base, out = Path(dataset).resolve(), Path(base).resolve(), Path(out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / CONFIG_NAME, config.model_dump_json(indent=2))
        log_path = out / LOG_NAME
        error_event: dict | None = None
        timed_out = threading.Event()

        with log_path.open("ab") as log:
            log_start = log.tell()
            self.process = subprocess.Popen(
                self.command(dataset, base, out), env=self._env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8", errors="replace",
                bufsize=1, start_new_session=True, preexec_fn=_die_with_parent,
            )
            watchdog = None
            if self.timeout_s is not None:
                watchdog = threading.Timer(self.timeout_s, lambda: (timed_out.set(), self._kill()))
                watchdog.daemon = True
                watchdog.start()
            try:
                for line in self.process.stdout:
                    event = _parse_event(line)
                    if event is None:
                        continue
                    if event["event"] == "error":
                        error_event = event
                    if on_event is not None:
                        on_event(event)
                returncode = self.process.wait()
            except BaseException:
                # A failing callback or Ctrl-C in the parent must not leave training running.
                self._kill()
                self.process.wait()
                raise
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                self.process.stdout.close()

        if returncode != 0:
            if timed_out.is_set():
                reason = f"training exceeded timeout_s={self.timeout_s:g} and was killed"
            elif error_event is not None:
                reason = str(error_event.get("message"))
            elif returncode < 0:
                reason = f"training process died from signal {signal.Signals(-returncode).name}"
            else:
                reason = f"training process exited with status {returncode}"
            raise TrainingFailed(reason, returncode=returncode, log_path=log_path,
                                 stderr_tail=_tail(log_path, log_start, self.tail_lines))
        try:
            return json.loads((out / SUMMARY_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise TrainingFailed(f"training exited cleanly but {out / SUMMARY_NAME} is unreadable: {error}",
                                 returncode=returncode, log_path=log_path) from None


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the parent dies, so a killed loop leaves no trainer
    holding the adapter folder's lock (Linux only; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _parse_event(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None

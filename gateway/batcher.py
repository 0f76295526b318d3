"""Batching: concurrent requests that share sampling settings and adapter are decoded together.

One thread collects requests for up to a window and runs them as batches. Nothing a request or
a backend does can stop it: an error in one batch goes to that batch's futures (a batch that
fails is retried one request at a time, so one bad request fails alone), and a watchdog starts
a new thread if the thread ever ends anyway. A future cancelled while queued (its token was
revoked, or its caller stopped waiting) is skipped, never decoded.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

from sia.gateway.protocol import ChatRequest, Completion

_Job = tuple[str | None, ChatRequest, Future]


class Batcher:
    WATCH_EVERY_S = 1.0

    def __init__(self, backend_for: Callable[[str | None], object], max_batch: int, window_s: float):
        self.backend_for, self.max_batch, self.window_s = backend_for, max_batch, window_s
        self.queue: queue.Queue[_Job] = queue.Queue()
        self.stopped = threading.Event()
        self.restarts = 0
        self._start_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self._ensure_running()
        threading.Thread(target=self._watch, daemon=True, name="sia-batcher-watchdog").start()

    def submit(self, adapter: str | None, request: ChatRequest) -> Future:
        future: Future = Future()
        if self.stopped.is_set():
            future.set_exception(RuntimeError("the gateway is stopped"))
        else:
            self.queue.put((adapter, request, future))
        return future

    def stop(self, wait_s: float = 30.0) -> None:
        """No new batches; wait up to `wait_s` for the one being decoded (a process that exits
        while a thread is inside torch aborts instead of exiting with its own status)."""
        self.stopped.set()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait_s)

    def _ensure_running(self) -> None:
        with self._start_lock:
            if self.stopped.is_set() or (self.thread is not None and self.thread.is_alive()):
                return
            if self.thread is not None:
                self.restarts += 1
            self.thread = threading.Thread(target=self._loop, daemon=True, name="sia-batcher")
            self.thread.start()

    def _watch(self) -> None:
        while not self.stopped.wait(self.WATCH_EVERY_S):
            self._ensure_running()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            jobs: list[_Job] = []
            try:
                jobs = self._collect()
                for group in self._groups(jobs).values():
                    self._run(group)
            except BaseException as exc:  # noqa: BLE001  (the loop must outlive anything a batch raises)
                _fail([future for _, _, future in jobs], exc)

    def _collect(self) -> list[_Job]:
        """The next jobs whose futures were not cancelled, collected for up to the window."""
        try:
            jobs = [self.queue.get(timeout=0.5)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.window_s
        while len(jobs) < self.max_batch:
            try:
                jobs.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return [job for job in jobs if job[2].set_running_or_notify_cancel()]

    def _groups(self, jobs: list[_Job]) -> dict[tuple, list[_Job]]:
        groups: dict[tuple, list[_Job]] = {}
        for job in jobs:
            adapter, request, future = job
            try:
                key = (adapter, request.sampling_key())
                hash(key)
            except Exception as exc:  # noqa: BLE001  (a request the parser let through; fail it alone)
                _fail([future], exc)
                continue
            groups.setdefault(key, []).append(job)
        return groups

    def _run(self, group: list[_Job]) -> None:
        try:
            outs = self._generate(group)
        except Exception as exc:  # noqa: BLE001
            if len(group) == 1:
                return _fail([group[0][2]], exc)
            for job in group:  # find the request that fails; the others still get their answers
                self._run([job])
            return
        for (_, _, future), out in zip(group, outs):
            future.set_result(out)

    def _generate(self, group: list[_Job]) -> list[Completion]:
        outs = self.backend_for(group[0][0]).generate([request for _, request, _ in group])
        if len(outs) != len(group):
            raise RuntimeError(f"the backend returned {len(outs)} completions for {len(group)} requests")
        return outs


def _fail(futures: list[Future], exc: BaseException) -> None:
    error = exc if isinstance(exc, Exception) else RuntimeError(f"{type(exc).__name__}: {exc}")
    for future in futures:
        if not future.done():
            future.set_exception(error)

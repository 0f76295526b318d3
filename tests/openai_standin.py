"""A stand-in OpenAI-compatible endpoint over real HTTP, for the remote backend's tests
(tests/unit/test_remote_backend.py) and benchmarks/remote_concurrency.py."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 resets connections when a benchmark opens 32 at once


class StandIn:
    """`/v1/chat/completions` on 127.0.0.1 (port 0), one thread per connection, keep-alive.

    Each request's outcome is the next of `outcomes` while any are left ("503", "429", "400",
    "drop": close the connection unanswered), else a 400 if its last message contains "BAD",
    else a completion (with usage unless `usage` is False). Every request first sleeps
    `latency_s`; `in_flight`/`max_in_flight` count requests inside that sleep.
    """

    def __init__(self):
        self.outcomes: list[str] = []
        self.retry_after: str | None = None  # sent with a 429
        self.latency_s = 0.0
        self.usage = True
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that gave up is expected here
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True, name="standin").start()

    def reset(self) -> None:
        """Forget the most requests held at once (a benchmark measures each level afresh)."""
        with self.lock:
            self.max_in_flight = 0

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def outcome(self, body: dict) -> str:
        with self.lock:
            self.bodies.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.outcomes:
                return self.outcomes.pop(0)
        return "400" if "BAD" in body["messages"][-1]["content"] else "ok"


def _handler(standin: StandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()  # no Nagle: headers and body go out in separate writes (a 40 ms stall each)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            standin.headers.append(dict(self.headers))
            outcome = standin.outcome(body)
            time.sleep(standin.latency_s)
            with standin.lock:  # before answering: the client may send its next request at once
                standin.in_flight -= 1
            if outcome == "drop":
                self.close_connection = True
                return
            if outcome == "ok":
                text = f"echo: {body['messages'][-1]['content']}"
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "length"}]}
                if standin.usage:
                    reply["usage"] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
                return self.answer(200, reply)
            extra = {"Retry-After": standin.retry_after} if outcome == "429" and standin.retry_after else {}
            auth = self.headers.get("Authorization", "")  # echoed, as some endpoints echo a rejected key
            self.answer(int(outcome), {"error": {"message": f"refused ({outcome}) with key {auth[7:]}"}}, extra)

        def answer(self, status: int, reply: dict, extra: dict | None = None) -> None:
            data = json.dumps(reply).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                **(extra or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler

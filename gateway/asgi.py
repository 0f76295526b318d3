"""The gateway's HTTP side: a Starlette app served by uvicorn on a thread of its own.

The app checks the token first (401, recorded), then reads the body to exactly its declared
length under `max_body_bytes`: a missing Content-Length gets 411, a larger one 413 before a
byte of the body is read, a chunked body 413 as soon as it passes the cap, and a body that does
not arrive within `idle_timeout_s` 408 (a negative or malformed Content-Length never reaches
the app: h11 answers 400). Each refusal made before the body is read (401, 404, 408, 411, 413)
closes the connection, so what is left of the body is never read. The call itself is served by
`Gateway.serve`. With runtime adapters (`sia serve --runtime-lora`), the admin token may also
POST /v1/load_lora_adapter and /v1/unload_lora_adapter (gateway.runtime_adapters); any other
token gets 403 (recorded).

uvicorn runs the h11 protocol (headers bounded by h11), with one addition: connections are
bounded (`max_connections`; one beyond gets 503 at once and is closed), and a connection found
idle (no request in progress, none answered since the last look) at a look every
`idle_timeout_s` is closed, so idle or trickling connections cannot exhaust the loop's file
descriptors.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from sia.config import GatewayConfig

if TYPE_CHECKING:
    from sia.gateway.server import Gateway

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                404: "invalid_request_error", 408: "timeout", 411: "invalid_request_error",
                413: "invalid_request_error", 429: "rate_limit_error", 504: "timeout"}


def error_payload(status: int, message: str) -> dict:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error")}}


def error(status: int, message: str, close: bool = False) -> JSONResponse:
    """An error reply; `close` ends the connection (after a body left unread)."""
    return JSONResponse(error_payload(status, message), status_code=status,
                        headers={"Connection": "close"} if close else None)


class BodyProblem(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def read_body(request: Request, cap: int) -> bytes:
    """The body, read to its declared length (or, chunked, to its end) and never past `cap`."""
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is None and not chunked:
        raise BodyProblem(411, "a request body with a Content-Length is required")
    if length is not None and int(length) > cap:  # h11 has checked it is a non-negative integer
        raise BodyProblem(413, f"request body of {int(length)} bytes; at most {cap}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise BodyProblem(413, f"request body over {cap} bytes")
    return bytes(body)


def build_app(gateway: Gateway) -> Starlette:
    """Every path goes to one endpoint: the token is checked before the route, as clients expect."""
    limits = gateway.limits

    async def endpoint(request: Request) -> Response:
        path = request.url.path
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        state = gateway.tokens.get(token)
        if state is None:
            await gateway.reject(None, "unknown token", path)
            return error(401, "invalid API key", close=True)  # its body, if any, is never read
        route = path.rstrip("/")
        if request.method == "GET" and route == "/v1/models":
            return JSONResponse({"object": "list", "data": [
                {"id": gateway.model_name, "object": "model", "owned_by": "sia"}]})
        adapters = route in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter") and gateway.runtime_adapters
        if request.method != "POST" or (route != "/v1/chat/completions" and not adapters):
            return error(404, f"no route {request.method} {path}", close=True)
        if adapters and token not in gateway.admin_tokens:
            await gateway.reject(state, "loading adapters needs the admin token", path)
            return error(403, "only the gateway's admin token may load or unload adapters", close=True)
        try:
            raw = await asyncio.wait_for(read_body(request, limits.max_body_bytes), limits.idle_timeout_s)
        except BodyProblem as problem:
            return error(problem.status, str(problem), close=True)
        except TimeoutError:
            return error(408, f"the request body did not arrive within {limits.idle_timeout_s:g} s", close=True)
        except ClientDisconnect:
            return Response(status_code=400)
        if adapters:  # vLLM's replies: plain text on success, an error object otherwise
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return error(400, "the body must be a JSON object")
            load = route.endswith("/load_lora_adapter")
            status, message = (gateway.runtime_adapters.load if load else gateway.runtime_adapters.unload)(body)
            return PlainTextResponse(message) if status == 200 else error(status, message)
        try:
            status, reply = await gateway.serve(state, raw, request.headers.get("x-sia-item"), path)
        except asyncio.CancelledError:  # the gateway is stopping (a run interrupted): no traceback
            return error(503, "the gateway is shutting down", close=True)
        return JSONResponse(reply, status_code=status)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


class _BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with a bound on connections and on their idle time. (It uses
    H11Protocol's `connections`, `cycle`, `loop` and `transport`, stable across uvicorn releases.)"""

    max_connections = 256
    idle_timeout_s = 30.0
    _REFUSED = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._answered = self._answered_at_check = 0
        self._idle_check = None
        if len(self.connections) > self.max_connections:
            transport.write(self._REFUSED)
            transport.close()
            return
        self._idle_check = self.loop.call_later(self.idle_timeout_s, self._close_if_idle)

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()

    def _close_if_idle(self) -> None:
        busy = self.cycle is not None and not self.cycle.response_complete
        if not busy and self._answered == self._answered_at_check:
            self.transport.close()
            return
        self._answered_at_check = self._answered
        self._idle_check = self.loop.call_later(self.idle_timeout_s, self._close_if_idle)

    def connection_lost(self, exc) -> None:
        if self._idle_check is not None:
            self._idle_check.cancel()
        super().connection_lost(exc)


class ServerThread:
    """uvicorn serving `app` on an already bound socket, in a daemon thread."""

    def __init__(self, app: Starlette, sock: socket.socket, limits: GatewayConfig):
        protocol = type("GatewayH11", (_BoundedH11,), {"max_connections": limits.max_connections,
                                                        "idle_timeout_s": limits.idle_timeout_s})
        config = uvicorn.Config(
            app, http=protocol, ws="none", lifespan="off", loop="asyncio", log_config=None, log_level="error",
            access_log=False, server_header=False,
            # uvicorn answers 503 when this many connections are open while one makes a request;
            # _BoundedH11 already refuses connections past max_connections.
            limit_concurrency=limits.max_connections + 1,
            timeout_keep_alive=5, timeout_graceful_shutdown=1, backlog=128)
        self.server, self.sock = uvicorn.Server(config), sock
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="sia-gateway")

    def start(self, timeout_s: float = 30) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not self.server.started:
            raise RuntimeError("the gateway's HTTP server did not start")

    def stop(self) -> None:
        """Stop serving: requests in flight get at most a second to finish."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(2)
            self.server.force_exit = True
            self.thread.join(5)
        self.sock.close()


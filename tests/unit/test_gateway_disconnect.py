"""The gateway when its client is gone: a killed agent's requests finish after their sockets
closed."""

from __future__ import annotations

import json
import socket
import time

from sia.gateway.server import MemoryRecorder
from tests.gateway_client import CHAT, GatedBackend, issue, make_gateway, post


def test_a_client_gone_before_its_answer_leaves_no_traceback_and_the_gateway_serves_on(gateways, capfd):
    """A killed agent's requests finish after its sockets closed (issue 16: the console filled
    with BrokenPipeError tracebacks): the answer is dropped quietly, the call still recorded."""
    backend = GatedBackend()
    recorder = MemoryRecorder()
    gw = make_gateway(backend, recorder)
    gateways.append(gw)
    token = issue(gw, tags={"q1", "q2"})
    body = json.dumps({**CHAT, "metadata": {"item": "q1"}}).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-SIA-Item: q1\r\n"
                 b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    assert backend.entered.wait(5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close with RST
    sock.close()
    backend.gate.set()
    deadline = time.monotonic() + 5
    while not recorder.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    status, reply = post(gw, token, CHAT, item="q2")
    assert status == 200 and reply["choices"][0]["message"]["content"]
    time.sleep(0.2)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "BrokenPipe" not in out + err and "ConnectionReset" not in out + err

"""The remote target backend (gateway/remote.py) against a stand-in OpenAI-compatible endpoint
over real HTTP: what it forwards and parses, which failures it retries and how long it waits,
its timeout, how many requests it keeps in flight, and that a failed request fails alone.
"""

from __future__ import annotations

import email.utils
import time

import pytest

from sia.gateway.batcher import Batcher
from sia.gateway.protocol import ChatRequest
from sia.gateway.remote import RemoteBackend, RemoteError, _retry_after_s
from sia.nodes.services import Services
from tests.fakes import fake_config
from tests.openai_standin import StandIn

KEY = "sk-test-do-not-leak-7f3a"
SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["theft", "assault"]}},
          "required": ["label"]}


@pytest.fixture
def standin():
    server = StandIn()
    yield server
    server.stop()


@pytest.fixture
def backends(monkeypatch):
    """Builds backends with the test key and no real backoff; closes them after the test."""
    monkeypatch.setenv("SIA_TEST_KEY", KEY)
    made = []

    def make(url: str, **kwargs) -> RemoteBackend:
        made.append(RemoteBackend(url, "remote-model", "SIA_TEST_KEY", **{"backoff_s": 0.01, **kwargs}))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


def chat(text: str = "he punched a clerk", **kwargs) -> ChatRequest:
    return ChatRequest([{"role": "system", "content": "classify"}, {"role": "user", "content": text}], **kwargs)


# --- built from the target role's config ---------------------------------------------------------

def test_services_build_the_remote_target_with_the_roles_knobs(tmp_path, standin, monkeypatch):
    monkeypatch.setenv("SIA_TEST_KEY", KEY)
    cfg = fake_config(tmp_path, target={"base_url": standin.base_url, "model": "remote-model",
                                        "api_key_env": "SIA_TEST_KEY", "timeout_s": 7, "max_concurrency": 3,
                                        "max_retries": 4})
    backend = Services.build(cfg, "remote-target").backend_for(None)
    try:
        assert (backend.timeout_s, backend.max_concurrency, backend.max_retries) == (7, 3, 4)
        assert backend.generate([chat()])[0].text == "echo: he punched a clerk"
        assert standin.headers[0]["Authorization"] == f"Bearer {KEY}"
    finally:
        backend.close()


# --- what is sent and parsed ------------------------------------------------------------------

def test_a_request_is_forwarded_with_schema_seed_and_key_and_its_usage_parsed(standin, backends):
    backend = backends(standin.base_url)
    [out] = backend.generate([chat(max_tokens=20, temperature=0.7, top_p=0.9, seed=5, json_schema=SCHEMA)])
    assert (out.text, out.prompt_tokens, out.completion_tokens, out.finish_reason) == (
        "echo: he punched a clerk", 11, 7, "length")
    assert standin.bodies == [{
        "model": "remote-model", "messages": chat().messages, "max_tokens": 20, "temperature": 0.7, "top_p": 0.9,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}, "seed": 5}]
    assert standin.headers[0]["Authorization"] == f"Bearer {KEY}"


def test_without_schema_or_seed_neither_is_sent_and_missing_usage_counts_zero(standin, backends):
    standin.usage = False
    [out] = backends(standin.base_url).generate([chat()])
    assert (out.prompt_tokens, out.completion_tokens) == (0, 0)
    assert "response_format" not in standin.bodies[0] and "seed" not in standin.bodies[0]


# --- retries ----------------------------------------------------------------------------------

def test_503_429_and_a_dropped_connection_are_retried_until_an_answer(standin, backends):
    standin.outcomes = ["503", "429", "drop"]
    [out] = backends(standin.base_url, max_retries=3).generate([chat()])
    assert out.text == "echo: he punched a clerk" and len(standin.bodies) == 4


def test_retries_are_bounded_and_the_error_names_endpoint_and_status(standin, backends):
    standin.outcomes = ["503"] * 5
    backend = backends(standin.base_url, max_retries=2)
    with pytest.raises(RemoteError) as caught:
        backend.generate([chat()])
    assert len(standin.bodies) == 3
    message = str(caught.value)
    assert backend.endpoint in message and "3 attempt" in message and "503" in message and KEY not in message


def test_a_400_is_not_retried_and_its_error_shows_the_body_but_never_the_key(standin, backends):
    backend = backends(standin.base_url, max_retries=3)
    with pytest.raises(RemoteError) as caught:
        backend.generate([chat("BAD request")])
    assert len(standin.bodies) == 1
    message = str(caught.value)
    assert backend.endpoint in message and "status 400" in message and "refused (400) with key" in message
    assert KEY not in message and KEY[:-4] not in message


def test_retry_after_is_waited_for_and_capped(standin, backends):
    standin.retry_after, standin.outcomes = "0.5", ["429"]
    started = time.monotonic()
    backends(standin.base_url, backoff_s=0).generate([chat()])
    assert time.monotonic() - started >= 0.5 and len(standin.bodies) == 2
    standin.retry_after, standin.outcomes = "3600", ["429"]
    started = time.monotonic()
    backends(standin.base_url, backoff_s=0, max_wait_s=0.2).generate([chat()])
    assert 0.2 <= time.monotonic() - started < 5


def test_retry_after_reads_seconds_and_http_dates():
    assert _retry_after_s("2") == 2.0 and _retry_after_s("-3") == 0.0
    assert _retry_after_s(None) is None and _retry_after_s("soon") is None and _retry_after_s("nan") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < _retry_after_s(in_a_minute) <= 60


def test_the_timeout_is_honoured_and_a_timeout_retried(standin, backends):
    standin.latency_s = 3.0
    started = time.monotonic()
    with pytest.raises(RemoteError, match="timed out after 0.3 s"):
        backends(standin.base_url, timeout_s=0.3, max_retries=1).generate([chat()])
    assert time.monotonic() - started < 2.5 and len(standin.bodies) == 2


# --- concurrency ------------------------------------------------------------------------------

def test_a_batch_is_in_flight_at_once_up_to_max_concurrency(standin, backends):
    standin.latency_s = 0.3  # long enough for all eight to be in flight at once if they are sent together
    outs = backends(standin.base_url, max_concurrency=8).generate([chat(f"case {i}") for i in range(8)])
    assert [out.text for out in outs] == [f"echo: case {i}" for i in range(8)]  # in order
    # counted by the server, not timed here: a loaded machine stretches wall time, never this count
    assert standin.max_in_flight == 8


def test_max_concurrency_bounds_the_requests_in_flight(standin, backends):
    standin.latency_s = 0.1
    started = time.monotonic()
    backend = backends(standin.base_url, max_concurrency=2)
    backend.generate([chat(f"case {i}") for i in range(8)])
    assert standin.max_in_flight == 2 and time.monotonic() - started >= 4 * 0.1
    backend.generate([chat(f"case {i}") for i in range(4)])  # the pool's connections are reused, still 2
    assert standin.max_in_flight == 2 and len(standin.bodies) == 12


# --- one failure fails one reply --------------------------------------------------------------

def test_a_failed_request_fails_only_its_own_reply_and_nothing_is_sent_twice(standin, backends):
    """The batcher reruns a failed batch one request at a time; the backend answers those reruns
    from the batch's outcomes instead of sending (and paying for) every request again."""
    backend = backends(standin.base_url, max_retries=2)
    batches = []

    def backend_for(adapter):
        batches.append(None)
        return backend

    batcher = Batcher(backend_for, max_batch=8, window_s=0.3)
    try:
        futures = [batcher.submit(None, chat(text)) for text in ("case a", "BAD case", "case c")]
        assert futures[0].result(5).text == "echo: case a" and futures[2].result(5).text == "echo: case c"
        with pytest.raises(RemoteError, match="status 400"):
            futures[1].result(5)
    finally:
        batcher.stop()
    assert len(batches) == 4 and len(standin.bodies) == 3  # the batch of 3, then its 3 reruns

"""gateway/cache.py: repeated greedy requests are answered from memory, everything else is decoded."""

from __future__ import annotations

from sia.gateway.cache import GreedyCache
from sia.gateway.protocol import ChatRequest
from sia.gateway.server import CallScope, Gateway, MemoryRecorder
from tests.fakes import KeywordBackend, http

SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["theft", "assault"]}}}


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], json_schema=SCHEMA, **kw)


def test_a_repeated_greedy_request_is_decoded_once_and_gets_the_first_answer():
    inner = KeywordBackend()
    cache = GreedyCache(inner)
    first = cache.generate([ask("he punched a clerk"), ask("she took a bike")])
    again = cache.generate([ask("she took a bike"), ask("he punched a clerk")])
    assert [c.text for c in again] == [c.text for c in reversed(first)]
    assert len(inner.requests) == 2 and (cache.hits, cache.decoded) == (2, 2)


def test_anything_a_greedy_answer_depends_on_makes_a_new_request():
    inner = KeywordBackend()
    cache = GreedyCache(inner)
    cache.generate([ask("a")])
    cache.generate([ask("a", max_tokens=8), ask("b"), ChatRequest(messages=[{"role": "user", "content": "a"}])])
    cache.generate([ChatRequest(messages=[{"role": "system", "content": "a"}], json_schema=SCHEMA)])
    assert len(inner.requests) == 5 and cache.hits == 0


def test_sampled_requests_are_always_decoded():
    inner = KeywordBackend()
    cache = GreedyCache(inner)
    for _ in range(2):
        cache.generate([ask("a", temperature=0.7, seed=1), ask("a", temperature=0.7, seed=1)])
    assert len(inner.requests) == 4 and cache.hits == 0


def test_repeats_inside_one_batch_are_decoded_once_in_order():
    inner = KeywordBackend()
    out = GreedyCache(inner).generate([ask("x"), ask("he punched a clerk"), ask("x"), ask("x", temperature=1.0)])
    assert [r.messages[0]["content"] for r in inner.requests] == ["x", "he punched a clerk", "x"]
    assert out[0] is out[2] and len(out) == 4 and all(c is not None for c in out)


def test_least_recently_used_answers_go_first_and_zero_turns_reuse_off():
    inner = KeywordBackend()
    cache = GreedyCache(inner, max_entries=2)
    cache.generate([ask("a"), ask("b")])
    cache.generate([ask("a")])  # a is now the most recent
    cache.generate([ask("c")])  # evicts b
    cache.generate([ask("a"), ask("b")])
    assert [r.messages[0]["content"] for r in inner.requests] == ["a", "b", "c", "b"]
    off = GreedyCache(KeywordBackend(), max_entries=0)
    off.generate([ask("a"), ask("a")])
    assert len(off.backend.requests) == 2


def test_the_gateway_still_records_every_call_with_its_own_item_tag():
    """Fine-tuning rows are built from the records, so an answer from the cache is a call like any other."""
    inner = KeywordBackend()
    cached = GreedyCache(inner)
    gw = Gateway(lambda adapter: cached, MemoryRecorder(), batch_window_ms=1).start()
    token = gw.issue_token(CallScope("r", 2, None, "task"))
    body = {"messages": [{"role": "user", "content": "he punched a clerk"}], "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}}
    try:
        replies = [http(gw, "/v1/chat/completions", token, body, {"X-SIA-Item": item})
                   for item in ("g2t-q00001", "g2t-q00002")]
    finally:
        gw.stop()
    assert [code for code, _ in replies] == [200, 200]
    replies = [reply["choices"][0]["message"]["content"] for _, reply in replies]
    assert replies == ['{"label": "theft"}'] * 2 and len(inner.requests) == 1
    assert [(c.item, c.completion) for c in gw.recorder.calls] == [(i, replies[0]) for i in ("g2t-q00001", "g2t-q00002")]

"""What the gateway accepts as a chat completion request: the OpenAI body checked by pydantic.

Every field the gateway uses is validated and bounded before anything is queued: messages
have a known role (system, user or assistant) and string content, numbers are real numbers in
range (a seed is an integer, never a list or a bool), the item tag is a short string, and a
`response_format` JSON schema is an object under a size and depth cap (its grammar is compiled
by the engine, and it is stored with every call). Fields the gateway does not use
(`model`, `stream`, `n`, ...) are ignored, as before. A failed check raises `InvalidRequest`,
whose message names the field and is sent back with status 400.

A schema with a `const` or a one-value `enum` lets the caller dictate the completion instead of
the model: `ChatCall.forced` says so, and the gateway records such calls as untrainable.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator

from sia.config import GatewayConfig
from sia.gateway.protocol import ChatRequest

MAX_TOKENS = 2048  # the most completion tokens one call gets; a larger max_tokens is served as this
MAX_MESSAGES = 256
MAX_TAG_CHARS = 200


class InvalidRequest(ValueError):
    """The body is not a chat request the gateway serves; the message says why (status 400)."""


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = Field(None, max_length=128)
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _schema_is_an_object(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "json_schema":
            spec = data.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise ValueError("response_format.json_schema.schema must be an object (a JSON schema)")
        return data


class ChatBody(BaseModel):
    """The fields of an OpenAI chat completion body that the gateway serves."""

    model_config = ConfigDict(extra="ignore")

    messages: list[Message] = Field(max_length=MAX_MESSAGES)
    max_tokens: StrictInt | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=1_000_000)
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, gt=0, le=1)
    seed: StrictInt | None = Field(None, ge=0, lt=2**63)
    response_format: ResponseFormat | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _messages_are_chat_messages(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the request body must be a JSON object")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in messages):
            raise ValueError("each message needs a 'role' and a string 'content'")
        return data


class ChatCall:
    """A validated request: what the engine decodes, what is recorded, and the item it names."""

    def __init__(self, body: ChatBody):
        fmt = body.response_format
        self.schema = None if fmt is None or fmt.type == "text" else (
            {"type": "object"} if fmt.type == "json_object" else fmt.json_schema.schema_)
        max_tokens = body.max_tokens or body.max_completion_tokens or 64
        self.request = ChatRequest(
            messages=[{"role": m.role, "content": m.content} for m in body.messages],
            max_tokens=min(max_tokens, MAX_TOKENS), temperature=body.temperature or 0.0,
            top_p=body.top_p or 1.0, json_schema=self.schema, seed=body.seed)
        # Stored with the call (finetune.records writes gold answers in this format): only the
        # fields that mean something, so what is stored is bounded by the schema caps.
        self.response_format = None if self.schema is None else (
            {"type": "json_object"} if fmt.type == "json_object"
            else {"type": "json_schema", "json_schema": fmt.json_schema.model_dump(by_alias=True, exclude_none=True)})
        item = (body.metadata or {}).get("item")
        self.item = None if item is None else str(item)

    @property
    def forced(self) -> bool:
        """Whether the schema, not the model, decides (part of) the completion."""
        return self.schema is not None and forces_one_value(self.schema)


def parse_chat_call(body: object, limits: GatewayConfig) -> ChatCall:
    """The validated call in `body` (parsed JSON); raises InvalidRequest."""
    try:
        parsed = ChatBody.model_validate(body)
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from None
    call = ChatCall(parsed)
    if call.schema is not None:
        check_schema(call.schema, limits)
    if call.item is not None and len(call.item) > MAX_TAG_CHARS:
        raise InvalidRequest(f"metadata.item: an item tag has at most {MAX_TAG_CHARS} characters")
    return call


def parse_chat_request(body: object, limits: GatewayConfig | None = None) -> ChatRequest:
    """The engine's request for an OpenAI chat body (as the gateway parses it); raises InvalidRequest."""
    return parse_chat_call(body, limits or GatewayConfig()).request


def check_schema(schema: dict, limits: GatewayConfig) -> None:
    """Refuse a schema whose grammar would be costly to build or whose record would be large."""
    if _depth(schema, limits.max_schema_depth) > limits.max_schema_depth:
        raise InvalidRequest(f"response_format: the schema nests deeper than {limits.max_schema_depth} levels")
    size = len(json.dumps(schema, ensure_ascii=False))
    if size > limits.max_schema_bytes:
        raise InvalidRequest(f"response_format: the schema is {size} bytes as JSON; at most {limits.max_schema_bytes}")


def forces_one_value(schema: dict) -> bool:
    """Whether some part of the schema admits exactly one value (`const`, or an `enum` of one)."""
    for node in _nodes(schema):
        if "const" in node:
            return True
        enum = node.get("enum")
        if isinstance(enum, list) and len({json.dumps(v, sort_keys=True) for v in enum}) <= 1:
            return True
    return False


def _depth(value: object, limit: int) -> int:
    """Nesting depth of dicts and lists, counted no further than limit + 1 (no deep recursion)."""
    if not isinstance(value, dict | list) or limit < 0:
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def _nodes(value: object):
    """Every dict inside `value`, depth first, without recursion."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _describe(error: ValidationError) -> str:
    """A pydantic error as one line a client can act on: `field: problem; field: problem`."""
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)

"""OpenAI request bodies, and how each becomes a work item's `items` and `params`.

The mapping (documented in docs/api.md, "OpenAI-compatible API"):

- chat:       items = n copies of {"messages": [...]}  (one item per choice)
- generate:   items = {"prompt": p} for each prompt, n copies each (choice index = prompt * n + copy)
- encode:     items = {"text": s} for each input string, {"tokens": [...]} for each token array
- image:      items = n copies of {"prompt": p}
- speech:     items = [{"input": text, "voice": voice}]

Every other OpenAI field the client sent goes to the worker in `params`, as sent (the
handler decides what `temperature` means); `model`, `n`, `stream`, `stream_options` and the
gateway's own `encoding_format` stay at the gateway. A field OpenAI does not define is
refused with 400, as OpenAI itself refuses it ("Unrecognized request argument"), so a typo
never passes silently. Types are checked strictly (no "1" for 1).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..submit import MAX_ITEMS  # items in one work item
from .errors import OpenAiError

MAX_CHOICES = 128  # OpenAI's own limit on n for chat and completions
MAX_IMAGES = 10  # OpenAI's limit on n for images
MAX_INPUTS = 2048  # OpenAI's limit on embedding inputs (and here on prompts per completion request)
MAX_SPEECH_CHARS = 4096

B = TypeVar("B", bound=BaseModel)

_Penalty = Field(default=None, ge=-2.0, le=2.0)


class _Body(BaseModel):
    """Fields every OpenAI body has; `params()` is what the worker gets."""

    model_config = ConfigDict(extra="forbid", strict=True)
    GATEWAY_FIELDS: ClassVar[frozenset[str]] = frozenset({"model", "n", "stream", "stream_options"})
    ITEM_FIELDS: ClassVar[frozenset[str]] = frozenset()  # they go into the items, not the params

    model: str = Field(min_length=1, max_length=300)
    user: str | None = Field(default=None, max_length=256)

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude_none=True,
                               exclude=set(self.GATEWAY_FIELDS | self.ITEM_FIELDS))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False
    include_obfuscation: bool | None = None  # sent by newer SDKs; nothing to obfuscate here


class _Sampling(_Body):
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = _Penalty
    presence_penalty: float | None = _Penalty
    logit_bias: dict[str, float] | None = Field(default=None, max_length=300)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("stream_options")
    @classmethod
    def _options_need_a_stream(cls, v: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if v is not None and not info.data.get("stream"):  # `stream` is declared first: validated already
            raise ValueError("stream_options is only allowed with stream: true")  # as OpenAI answers
        return v

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v


class Message(BaseModel):
    """One chat message; fields past role and content (name, tool_calls, ...) go to the worker as sent."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_Sampling):
    ITEM_FIELDS: ClassVar[frozenset[str]] = frozenset({"messages"})
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None
    service_tier: str | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    function_call: str | dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    def items(self) -> list[Any]:
        conversation = {"messages": [m.model_dump(exclude_unset=True) for m in self.messages]}
        return [conversation] * self.n  # the same object n times: packed once per copy, never copied here


Tokens = list[int]


class CompletionBody(_Sampling):
    ITEM_FIELDS: ClassVar[frozenset[str]] = frozenset({"prompt"})
    prompt: str | list[str] | Tokens | list[Tokens]
    best_of: int | None = Field(default=None, ge=1, le=20)
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    suffix: str | None = None

    def prompts(self) -> list[str | Tokens]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [p]  # type: ignore[list-item]  # one prompt as token ids
        return list(p)  # type: ignore[arg-type]

    def items(self) -> list[Any]:
        prompts = self.prompts()
        if not prompts or len(prompts) > MAX_INPUTS:
            raise OpenAiError("bad_request", f"'prompt' must hold 1 to {MAX_INPUTS} prompts", param="prompt")
        if len(prompts) * self.n > MAX_ITEMS:
            raise OpenAiError("bad_request", f"{len(prompts)} prompts x n={self.n} is {len(prompts) * self.n} "
                                             f"completions; the limit is {MAX_ITEMS}", param="n")
        # The n copies of a prompt are one object: routes.py sizes each distinct item once.
        return [item for p in prompts for item in [{"prompt": p}] * self.n]


class EmbeddingBody(_Body):
    GATEWAY_FIELDS: ClassVar[frozenset[str]] = frozenset({"model", "encoding_format"})
    ITEM_FIELDS: ClassVar[frozenset[str]] = frozenset({"input"})
    input: str | list[str] | Tokens | list[Tokens]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65_536)

    def items(self) -> list[Any]:
        inp = self.input
        if isinstance(inp, str):
            inputs: list[Any] = [inp]
        elif inp and all(isinstance(x, int) for x in inp):
            inputs = [inp]
        else:
            inputs = list(inp)
        if not inputs or len(inputs) > MAX_INPUTS:
            raise OpenAiError("bad_request", f"'input' must hold 1 to {MAX_INPUTS} entries", param="input")
        if any(x == "" or x == [] for x in inputs):
            raise OpenAiError("bad_request", "'input' may not contain an empty string or token array", param="input")
        return [{"text": x} if isinstance(x, str) else {"tokens": x} for x in inputs]


class ImageBody(_Body):
    ITEM_FIELDS: ClassVar[frozenset[str]] = frozenset({"prompt"})
    prompt: str = Field(min_length=1, max_length=32_000)
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    response_format: Literal["b64_json", "url"] | None = None
    size: str | None = Field(default=None, max_length=32)
    quality: str | None = Field(default=None, max_length=32)
    style: str | None = Field(default=None, max_length=32)
    background: str | None = Field(default=None, max_length=32)
    moderation: str | None = Field(default=None, max_length=32)
    output_format: str | None = Field(default=None, max_length=16)
    output_compression: int | None = Field(default=None, ge=0, le=100)

    def params(self) -> dict[str, Any]:
        if self.response_format == "url":
            # No image store to link to: refused rather than answered in another format.
            raise OpenAiError("bad_request", "response_format 'url' is not supported here (the gateway keeps no "
                                             "images to link to); use 'b64_json'", param="response_format")
        params = super().params()
        params.pop("response_format", None)
        return params

    def items(self) -> list[Any]:
        return [{"prompt": self.prompt}] * self.n


SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


class SpeechBody(_Body):
    ITEM_FIELDS: ClassVar[frozenset[str]] = frozenset({"input", "voice", "stream_format"})
    input: str = Field(min_length=1, max_length=MAX_SPEECH_CHARS)
    voice: str | dict[str, Any] = Field(default="alloy")
    response_format: SpeechFormat = "mp3"
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    instructions: str | None = Field(default=None, max_length=4096)
    stream_format: Literal["audio", "sse"] | None = None

    def params(self) -> dict[str, Any]:
        if self.stream_format == "sse":
            raise OpenAiError("bad_request", "stream_format 'sse' is not supported for speech; the audio comes "
                                             "whole", param="stream_format")
        params = super().params()
        params["response_format"] = self.response_format  # the worker must know the format even by default
        return params

    def items(self) -> list[Any]:
        return [{"input": self.input, "voice": self.voice}]


def parse(cls: type[B], body: Any) -> B:
    """The body as `cls`, or a 400 in OpenAI's shape naming the first bad field."""
    if not isinstance(body, dict):
        raise OpenAiError("bad_request", "the request body must be a JSON object")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not _union_tag(p))
        top = str(err["loc"][0]) if err["loc"] else None
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            message = f"Unrecognized request argument supplied: {top}"
        elif err["type"] == "missing":
            message = f"'{loc}' is required"
        else:
            message = f"'{loc}': {err['msg']}"
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem(s))"
        raise OpenAiError("bad_request", message, param=top) from None


def _union_tag(part: object) -> bool:
    """pydantic names the union member it tried (`str`, `list[int]`): not part of the field's path."""
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool", "dict", "list"})

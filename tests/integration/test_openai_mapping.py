"""The OpenAI mapping on its own: bodies -> items/params, worker results -> responses, and what is refused.

(The endpoints themselves, with the official client, are in test_openai.py.)
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from switchyard.errors import ApiError
from switchyard.gateway.openai_api import results
from switchyard.gateway.openai_api.bodies import ChatBody, CompletionBody, EmbeddingBody, SpeechBody, parse
from switchyard.gateway.openai_api.errors import OpenAiError
from switchyard.messages import Result


def ok(items: list[Any], usage: dict[str, int] | None = None) -> Result:
    return Result(id="r", ok=True, items=items, usage=usage)


def test_params_are_the_other_openai_fields_as_sent() -> None:
    body = parse(ChatBody, {"model": "m:p", "messages": [{"role": "user", "content": "hi", "name": "ann"}],
                            "n": 2, "temperature": 0.5, "stop": ["x"], "stream": False, "user": "u1"})
    assert body.params() == {"temperature": 0.5, "stop": ["x"], "user": "u1"}  # model, n, stream stay here
    assert body.items() == [{"messages": [{"role": "user", "content": "hi", "name": "ann"}]}] * 2
    emb = parse(EmbeddingBody, {"model": "m", "input": [[1, 2], [3]], "encoding_format": "base64",
                                "dimensions": 4})
    assert emb.items() == [{"tokens": [1, 2]}, {"tokens": [3]}] and emb.params() == {"dimensions": 4}
    assert parse(EmbeddingBody, {"model": "m", "input": "text"}).items() == [{"text": "text"}]
    with pytest.raises(OpenAiError):  # strings and token arrays mixed: neither of OpenAI's shapes
        parse(EmbeddingBody, {"model": "m", "input": [[1, 2], "text"]})
    assert parse(SpeechBody, {"model": "m", "input": "hi"}).params() == {"response_format": "mp3"}
    comp = parse(CompletionBody, {"model": "m", "prompt": [5, 6, 7]})  # one prompt as token ids
    assert comp.items() == [{"prompt": [5, 6, 7]}]


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"role": "user"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}, "stream"),
    ({"model": "", "messages": [{"role": "user"}]}, "model"),
    ({"messages": [{"role": "user"}]}, "model"),
])
def test_bad_chat_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAiError) as err:
        parse(ChatBody, body)
    assert err.value.status == 400 and err.value.param == param


def test_embedding_inputs_are_bounded() -> None:
    for inp in ([], [""], ["x"] * 2049):
        with pytest.raises(OpenAiError) as err:
            parse(EmbeddingBody, {"model": "m", "input": inp}).items()
        assert err.value.param == "input"


def test_results_map_to_openai_objects_and_usage_only_when_reported() -> None:
    chat = results.chat_completion(ok(["a", {"message": {"content": "b"}, "finish_reason": "length"}],
                                      {"input_tokens": 3, "output_tokens": 2}), 2, "m", "rid")
    assert [(c["message"]["content"], c["finish_reason"]) for c in chat["choices"]] == [("a", "stop"),
                                                                                      ("b", "length")]
    assert chat["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert "usage" not in results.completion(ok(["x"]), 1, "m", "rid")
    emb = results.embeddings(ok([[0.5, -1.0]]), 1, "m", "base64")
    assert struct.unpack("<2f", base64.b64decode(emb["data"][0]["embedding"])) == (0.5, -1.0)


@pytest.mark.parametrize("call", [
    lambda: results.chat_completion(ok(["a"]), 2, "m", "r"),  # fewer results than choices
    lambda: results.chat_completion(ok([{"oops": 1}]), 1, "m", "r"),
    lambda: results.chat_completion(ok([{"content": "a", "finish_reason": "bored"}]), 1, "m", "r"),
    lambda: results.embeddings(ok([["a", "b"]]), 1, "m", "float"),
    lambda: results.embeddings(ok([[]]), 1, "m", "float"),
    lambda: results.images(ok([{"b64_json": "not base64!"}]), 1),
    lambda: results.speech(ok([{"audio": "x"}]), "wav"),
])
def test_a_result_the_mapping_cannot_read_is_the_workers_fault(call: Any) -> None:
    with pytest.raises(ApiError) as err:
        call()
    assert (err.value.status, err.value.code) == (502, "worker_error")


def test_a_workers_content_type_never_reaches_the_header_unchecked() -> None:
    audio = base64.b64encode(b"RIFF").decode()
    assert results.speech(ok([{"audio_b64": audio, "content_type": "audio/x-wav"}]), "wav")[1] == "audio/x-wav"
    for bad in ("text/html", "audio/wav\r\nSet-Cookie: a=b", "audio/" + "x" * 100):
        assert results.speech(ok([{"audio_b64": audio, "content_type": bad}]), "wav") == (b"RIFF", "audio/wav")

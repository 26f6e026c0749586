"""Write a tiny Llama-architecture model with random weights and an offline-trained tokenizer.

No weights can be downloaded here, so engines are exercised on models made locally: the right
architecture, real weights files and a real BPE tokenizer, sized to start fast. Their output is noise;
their serving path is real. Two forms:

  .venv-vllm/bin/python scripts/make_tiny_llama.py [OUT_DIR]
      a Hugging Face folder (safetensors, tokenizer.json) for vLLM, 64-dim heads (vLLM's CPU attention
      has no kernel for 16); needs torch, transformers and tokenizers (vLLM's environment has them).
  python scripts/make_tiny_llama.py --gguf [OUT.gguf]
      a GGUF file (about 1 MB, f32) for llama.cpp: the same shape, a byte-level BPE vocabulary trained
      here on the rig's own source text; needs only numpy and gguf (the rig's own dependencies), so it
      can be made on a machine without a registry (scripts/gpu_smoke.sh uses it when Gemma is not there).
  python scripts/make_tiny_llama.py --catalog OUT.yaml FILE.gguf [BASE.yaml]
      BASE (default: the repository's models.yaml) plus an entry `tiny-llama-gguf` for that file.
"""

import json
import sys
from pathlib import Path

SEED = 0
TEXT = (Path(__file__).resolve().parent.parent / "bench" / "load" / "workload.py").read_text()
CACHE = Path.home() / ".cache" / "selfhost-bench"
SHAPE = {"hidden": 128, "ffn": 256, "layers": 2, "heads": 2, "kv_heads": 1, "context": 2048}


def make_hf(out: Path) -> int:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        print(out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([TEXT] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=SHAPE["hidden"],
        intermediate_size=SHAPE["ffn"],
        num_hidden_layers=SHAPE["layers"],
        num_attention_heads=SHAPE["heads"],
        num_key_value_heads=SHAPE["kv_heads"],
        max_position_embeddings=SHAPE["context"],
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    (out / "README.txt").write_text("Random weights, made by scripts/make_tiny_llama.py for serving tests.\n")
    print(out)
    return 0


def byte_chars() -> dict[int, str]:
    """GPT-2's byte-to-unicode table: every byte as a printable character (what llama.cpp's BPE expects)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def train_bpe(text: str, merges: int) -> list[tuple[str, str]]:
    """Byte-level BPE merges learnt from text: words split the GPT-2 way (a leading space kept), the most
    frequent adjacent pair merged each round, ties broken by the pair itself so the result is fixed."""
    import re

    chars = byte_chars()
    words: dict[tuple[str, ...], int] = {}
    for word in re.findall(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+", text):
        key = tuple(chars[b] for b in word.encode())
        words[key] = words.get(key, 0) + 1
    learnt: list[tuple[str, str]] = []
    for _ in range(merges):
        pairs: dict[tuple[str, str], int] = {}
        for word, n in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        learnt.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return learnt


def make_gguf(out: Path, merges: int = 256) -> int:
    """A llama GGUF that llama.cpp loads and serves: f32 random weights, byte-level BPE ("gpt2") vocabulary."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType

    if out.exists():
        print(out)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    learnt = train_bpe(TEXT, merges)
    tokens = ["<unk>", "<s>", "</s>", *byte_chars().values(), *(a + b for a, b in learnt)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.NORMAL] * (len(tokens) - 3)
    hidden, ffn, heads, kv_heads = SHAPE["hidden"], SHAPE["ffn"], SHAPE["heads"], SHAPE["kv_heads"]
    head_dim = hidden // heads
    rng = np.random.default_rng(SEED)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = GGUFWriter(str(out), "llama")
    writer.add_name("tiny-llama (random weights, scripts/make_tiny_llama.py)")
    writer.add_context_length(SHAPE["context"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(SHAPE["layers"])
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{a} {b}" for a, b in learnt])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    ones = np.ones(hidden, dtype=np.float32)
    # numpy shape (rows, cols) is GGUF's (ne1, ne0): llama.cpp's {n_embd, n_vocab} is (n_vocab, n_embd) here
    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    for i in range(SHAPE["layers"]):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(hidden, heads * head_dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(hidden, ffn))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", weight(len(tokens), hidden), raw_dtype=GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(out)
    return 0


CATALOG_ENTRY = "tiny-llama-gguf"


def write_catalog(out: Path, gguf: Path, base: Path) -> int:
    """`base` (a models.yaml) plus an entry `tiny-llama-gguf` for the GGUF file, written to `out`."""
    import yaml

    class Loader(yaml.SafeLoader):  # dates stay the strings the catalog wrote ("as_of: 2025-09-24")
        yaml_implicit_resolvers = {
            key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
            for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

    catalog = yaml.load(base.read_text(), Loader=Loader) or {}
    catalog.setdefault("models", {})[CATALOG_ENTRY] = {
        "description": "A 2-layer Llama with random weights (scripts/make_tiny_llama.py --gguf); its text is noise.",
        "format": "gguf",
        "api": "completions",
        "source": {"path": str(gguf.resolve())},
        "context_window": SHAPE["context"],
        "engines": ["llamacpp", "ollama"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(catalog, sort_keys=False))
    print(out)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--gguf"]:
        return make_gguf(Path(argv[1]) if len(argv) > 1 else CACHE / "tiny-llama.gguf")
    if argv[:1] == ["--catalog"]:  # --catalog OUT.yaml GGUF [BASE models.yaml]
        base = Path(argv[3]) if len(argv) > 3 else Path(__file__).resolve().parent.parent / "models.yaml"
        return write_catalog(Path(argv[1]), Path(argv[2]), base)
    if argv[:1] == ["--describe"]:  # the shape
        print(json.dumps(SHAPE))
        return 0
    return make_hf(Path(argv[0]) if argv else CACHE / "tiny-llama")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Write a tiny Llama-architecture model with random weights and an offline-trained tokenizer.

No weights can be downloaded here, so vLLM is exercised on a model made locally: the right
architecture, safetensors weights and a real BPE tokenizer, sized to start fast on a CPU (64-dim heads: vLLM's CPU attention has no kernel for 16). Its
output is noise; its serving path is real. Run with the vLLM environment's Python (it has torch,
transformers and tokenizers):  .venv-vllm/bin/python scripts/make_tiny_llama.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEED = 0
TEXT = (Path(__file__).resolve().parent.parent / "bench" / "load" / "prompts.py").read_text()


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache" / "selfhost-bench" / "tiny-llama"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        print(out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([TEXT] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    (out / "README.txt").write_text("Random weights, made by scripts/make_tiny_llama.py for serving tests.\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

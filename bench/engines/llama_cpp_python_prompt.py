"""Count a chat request's prompt tokens exactly as llama-cpp-python's server builds them, template included.

llama-cpp-python's server sends no usage in streams, so the rig counts tokens itself; a chat prompt's count must
include the tokens its chat format adds (GuideLLM's issue #75 is that miss). Run by the llama.cpp driver in the
interpreter that runs the server (standard library and llama_cpp only; no import of `bench`), it loads the
model's vocabulary alone (`vocab_only=True`: no weights, about a second) and, for each request body read as one
JSON line on stdin, runs the server's own path: the body validated as the server's CreateChatCompletionRequest
and dumped as its /v1/chat/completions handler does, then `Llama.create_chat_completion` with the chat format
that `Llama.__init__` chose from the GGUF's metadata (its `tokenizer.chat_template` rendered with jinja2 by
Jinja2ChatFormatter, or a format it guessed, or its llama-2 fallback), which formats the messages and tokenizes
the prompt with llama.cpp. The tokens it would have handed to `create_completion` are counted and written as
one JSON line {"tokens": N} (or {"error": ...}); nothing is generated.
"""

import argparse
import json
import sys


class _Captured(Exception):
    def __init__(self, prompt):
        super().__init__("captured")
        self.prompt = prompt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--chat-format", default=None, help="the server's --chat_format, if it was given one")
    args = parser.parse_args()

    import llama_cpp
    from llama_cpp.server.types import CreateChatCompletionRequest

    llama = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False, chat_format=args.chat_format)

    def capture(*positional, **named):
        raise _Captured(named.get("prompt", positional[0] if positional else None))

    llama.create_completion = capture  # the chat handler's last step: what it would send is the prompt
    exclude = {"n", "logit_bias_type", "user", "min_tokens"}  # as llama_cpp/server/app.py create_chat_completion
    print(json.dumps({"ready": True, "chat_format": llama.chat_format}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            body = CreateChatCompletionRequest(**json.loads(line))
            kwargs = body.model_dump(exclude=exclude)
            llama.create_chat_completion(**kwargs)
            answer = {"error": "the chat handler returned without building a prompt"}
        except _Captured as got:
            answer = {"tokens": len(got.prompt)} if isinstance(got.prompt, list) else {"error": "prompt is not tokens"}
        except Exception as exc:  # noqa: BLE001 - said back to the rig, which records it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

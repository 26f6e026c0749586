"""What of an environment or a command line a run records: a secret's value never (see the README's secrets
rule). A variable is taken for a secret by a word of its name (HF_TOKEN, OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY;
not TOKENIZERS_PARALLELISM)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SECRET_WORDS = frozenset(
    {"TOKEN", "KEY", "APIKEY", "SECRET", "PASSWORD", "PASSWD", "PASS", "CREDENTIAL", "CREDENTIALS", "AUTH", "PAT"}
)
NOT_RECORDED = "<set; a secret, not recorded>"
_ENV_FLAGS = ("--engine-env",)
_ARG_FLAGS = ("--engine-arg",)
_SECRET_ARG = re.compile(
    r"(^|[-_])(api[-_]?keys?|(hf|auth|access|bearer)[-_]token|secret|password|passwd)$|^-hft$", re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    return any(word in SECRET_WORDS for word in re.split(r"[^A-Za-z0-9]+", name.upper()))


def recorded_env(env: Mapping[str, str], prefixes: tuple[str, ...] = ("",)) -> dict[str, str]:
    """The variables whose names start with one of `prefixes`, each secret's value replaced."""
    return {k: NOT_RECORDED if is_secret_name(k) else v for k, v in env.items() if k.startswith(prefixes)}


def recorded_command(argv: Iterable[str]) -> list[str]:
    """The command line with the value of each secret NAME=VALUE given to an environment flag replaced, and
    each secret an engine argument carries (see recorded_argv)."""
    out: list[str] = []
    engine_args: list[str] = []  # what --engine-arg gave so far, so `--api-key` then its value is seen whole
    for arg in argv:
        flag, eq, pair = arg.partition("=")
        if eq and flag in _ENV_FLAGS:
            out.append(f"{flag}={_pair(pair)}")
        elif out and out[-1] in _ENV_FLAGS:
            out.append(_pair(arg))
        elif eq and flag in _ARG_FLAGS:
            engine_args.append(pair)
            out.append(f"{flag}={recorded_argv(engine_args)[-1]}")
        elif out and out[-1] in _ARG_FLAGS:
            engine_args.append(arg)
            out.append(recorded_argv(engine_args)[-1])
        else:
            out.append(arg)
    return out


def recorded_argv(argv: Iterable[str]) -> list[str]:
    """An engine's argv with each secret its flags carry replaced: `--api-key K [K2 ...]` (vLLM takes several),
    `--api-key=K`, `--hf-token K`, `-hft K`, xllamacpp's `api_keys=K`. Narrower than a variable's name
    (add_bos_token, --max-num-batched-tokens and --api-key-file stay as given)."""
    out: list[str] = []
    in_secret = False  # the values after a secret flag, up to the next flag
    for arg in argv:
        if arg.startswith("-"):
            in_secret = "=" not in arg and bool(_SECRET_ARG.search(arg))
        elif in_secret:
            out.append(NOT_RECORDED)
            continue
        name, eq, _ = arg.partition("=")
        out.append(f"{name}={NOT_RECORDED}" if eq and _SECRET_ARG.search(name) else arg)
    return out


def _pair(pair: str) -> str:
    name, eq, _ = pair.partition("=")
    return f"{name}={NOT_RECORDED}" if eq and is_secret_name(name) else pair


def redacted_env_fields(value):
    """A spec or plan as JSON with every `env` mapping in it (an engine's environment) passed through
    recorded_env, and every engine's `extra_args` through recorded_argv: what a state file or report keeps."""
    if isinstance(value, dict):
        return {
            k: recorded_env(v)
            if k == "env" and isinstance(v, dict)
            else recorded_argv(v)
            if k == "extra_args" and isinstance(v, list)
            else redacted_env_fields(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redacted_env_fields(v) for v in value]
    return value

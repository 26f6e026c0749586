"""Serve a GGUF model with llama.cpp's native HTTP server embedded in the `xllamacpp` wheel.

Run as a script by the llama.cpp driver, in whichever Python has xllamacpp installed, so it uses
the standard library and xllamacpp only (no import of `bench`). It writes what it runs (package
version, build and CPU features, every parameter it set) to --info-file, then serves until SIGTERM.
"""

import argparse
import enum
import json
import signal
import sys
import threading


def _set_param(params, dotted: str, raw: str) -> None:
    """--set name=value for any CommonParams field, e.g. n_batch=512, sampling.seed=1, api_keys=a,b or
    pooling_type=mean (an enum by its name's last part, or its number)."""
    target = params
    *parents, leaf = dotted.split(".")
    for part in parents:
        target = getattr(target, part)
    current = getattr(target, leaf)
    if isinstance(current, enum.Enum):  # e.g. pooling_type=mean (or its number, 1)
        kind = type(current)
        named = [m for m in kind if m.name.lower().endswith("_" + raw.lower()) or m.name.lower() == raw.lower()]
        value = named[0] if named else kind(int(raw))
    elif isinstance(current, list):
        value = [item for item in raw.split(",") if item]
    elif isinstance(current, bool):
        value = raw.lower() in ("1", "true", "yes", "on")
    elif isinstance(current, int):
        value = int(raw)
    elif isinstance(current, float):
        value = float(raw)
    else:
        value = raw
    setattr(target, leaf, value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ctx-size", type=int, required=True, help="total context, shared by the slots")
    parser.add_argument("--parallel", type=int, required=True, help="parallel slots")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-threads", type=int, required=True)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--info-file", required=True)
    args = parser.parse_args()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.batch_threads
    params.n_gpu_layers = args.gpu_layers
    params.endpoint_metrics = True
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"--set {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 2
        try:
            _set_param(params, name, value)
        except (AttributeError, ValueError, TypeError) as exc:
            print(f"--set {item!r}: {exc}", file=sys.stderr)
            return 2

    info = {
        "xllamacpp_version": xllamacpp.__version__,
        "build_info": dict(xllamacpp.BUILD_INFO),
        "system_info": xllamacpp.get_system_info().strip(),
        "params": {
            "model.path": args.model,
            "hostnames": [args.host],
            "port": args.port,
            "n_ctx": args.ctx_size,
            "n_parallel": args.parallel,
            "cpuparams.n_threads": args.threads,
            "cpuparams_batch.n_threads": args.batch_threads,
            "n_gpu_layers": args.gpu_layers,
            "endpoint_metrics": True,
            **dict(s.partition("=")[::2] for s in args.set),
        },
    }
    with open(args.info_file, "w", encoding="utf-8") as handle:
        json.dump(info, handle)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        server = xllamacpp.Server(params)  # noqa: F841  (serves on its own threads while referenced)
    except RuntimeError as exc:
        print(f"xllamacpp could not start the server: {exc} (llama.cpp's messages above say why)", flush=True)
        return 1
    print(f"xllamacpp server listening on {args.host}:{args.port}", flush=True)
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

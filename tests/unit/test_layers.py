"""The package tree is the pipeline: every module imports only from its own layer or the ones below it
(imports inside functions included), so nothing reaches up and no cycle can form."""

import ast
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
# lowest first; a module belongs to the first entry its dotted name starts with
LAYERS = [
    ("bench.errors", "bench.spec", "bench.redact"),
    ("bench.records", "bench.summary", "bench.schemas"),
    ("bench.catalog", "bench.results", "bench.hardware", "bench.modelshape", "bench.roofline", "bench.metrics"),
    ("bench.clients", "bench.telemetry", "bench.engines"),
    ("bench.load",),
    ("bench.quality", "bench.cost", "bench.prices"),
    ("bench.analysis", "bench.calibrate", "bench.format", "bench.console"),
    (
        "bench.run",
        "bench.runs",
        "bench.decision",
        "bench.report",
        "bench.check",
        "bench.route",
        "bench.scale.workers",
        "bench.scale.cluster",
    ),
    ("bench.scale",),
    ("bench.cli",),
]


def layer(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def modules():
    for path in sorted(BENCH.rglob("*.py")):
        parts = path.relative_to(BENCH.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in ("bench", "bench.__main__"):
            yield name, path


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench"):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("bench"))


def test_every_import_goes_down_or_sideways():
    upward = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, path in modules()
        for target in imports(path)
        if target != "bench" and layer(target) > layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_the_command_line_loads_no_heavy_library_until_a_verb_needs_it():
    """`bench --help`, and every verb's parser, load without pandas, matplotlib or Ray (about 0.8 s of a
    1.3 s start here): the verbs that draw or ship import them where they run."""
    heavy = ("pandas", "matplotlib", "ray")
    probe = f"import sys, bench.cli; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []

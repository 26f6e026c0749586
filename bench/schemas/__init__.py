"""JSON Schemas of what a run directory holds, so others can read run directories without this package.

python -m bench.schemas          writes them here (bench/schemas/*.schema.json)
python -m bench.schemas --check  says whether the shipped files are current (a test runs this)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from bench.records import SCHEMA_VERSION, Manifest, RequestRecord, TelemetrySample
from bench.spec import RunSpec
from bench.summary import RunSummary

HERE = Path(__file__).parent
SCHEMAS = {
    "run-spec": RunSpec,
    "request-record": RequestRecord,  # one line of requests.jsonl
    "telemetry-sample": TelemetrySample,  # one line of telemetry.jsonl
    "manifest": Manifest,
    "summary": RunSummary,
}


def schema(name: str) -> dict[str, Any]:
    document = TypeAdapter(SCHEMAS[name]).json_schema(mode="serialization", by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"selfhost-bench/{name}/v{SCHEMA_VERSION}",
        **document,
    }


def text(name: str) -> str:
    return json.dumps(schema(name), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    stale = (
        [name for name in SCHEMAS if (HERE / f"{name}.schema.json").read_text() != text(name)]
        if ("--check" in argv)
        else []
    )
    if "--check" in argv:
        print("schemas current" if not stale else f"stale: {', '.join(stale)}; run python -m bench.schemas")
        return 1 if stale else 0
    for name in SCHEMAS:
        (HERE / f"{name}.schema.json").write_text(text(name))
    print(f"wrote {len(SCHEMAS)} schemas to {HERE}")
    return 0

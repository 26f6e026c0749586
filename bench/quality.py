"""Golden sets: cases with deterministic checks, their verdicts on a run's outputs, and the success rate
with a Wilson interval.

A golden set is JSONL, one case per line:

    {"id": "faq-refund-window", "prompt": "..." | "messages": [...], "tags": ["real"],
     "max_tokens": 64, "checks": [{"type": "contains", "value": "30 days"}, ...], "reference": "..."}

A case passes when its request succeeded and every check passes. Checks:

    exact         output equals `value` (whitespace stripped; `ignore_case`)
    contains      output contains `value` (a string, or a list: all of them; `ignore_case`)
    not_contains  output contains none of `value` (`ignore_case`)
    regex         re.search(`pattern`) finds a match (`ignore_case`)
    json          output is JSON (code fences allowed) and, given `schema`, validates against it
    number        the first number in the output is within `tolerance` of `value`
    max_length    output has at most `chars` characters and/or `words` words

`reference` is kept for people reviewing failures; no check reads it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.errors import UsageError
from bench.metrics.stats import wilson_interval
from bench.records import RequestRecord
from bench.results import read_input_jsonl
from bench.summary import CaseFailure, CheckCount, Quality, Rate

KNOWN_TAGS = ("real", "edge", "adversarial", "prompt-injection", "regression", "malformed-input")


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Exact(_Check):
    type: Literal["exact"]
    value: str
    ignore_case: bool = False


class Contains(_Check):
    type: Literal["contains", "not_contains"]
    value: str | list[str]
    ignore_case: bool = False


class Regex(_Check):
    type: Literal["regex"]
    pattern: str
    ignore_case: bool = False

    @model_validator(mode="after")
    def _compiles(self):
        try:
            re.compile(self.pattern)
        except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999} overflows, not re.error
            raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
        return self


class Json(_Check):
    type: Literal["json"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _valid_schema(self):
        if self.schema_ is not None:
            try:
                jsonschema.validators.validator_for(self.schema_).check_schema(self.schema_)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"schema is not a valid JSON Schema: {exc.message}") from None
        return self


class Number(_Check):
    type: Literal["number"]
    value: float
    tolerance: float = Field(default=0.0, ge=0)


class MaxLength(_Check):
    type: Literal["max_length"]
    chars: int | None = Field(default=None, gt=0)
    words: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_limit(self):
        if self.chars is None and self.words is None:
            raise ValueError("give `chars` or `words`")
        return self


Check = Annotated[Exact | Contains | Regex | Json | Number | MaxLength, Field(discriminator="type")]


class GoldenCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    tags: list[str] = Field(default_factory=list)
    max_tokens: int | None = Field(default=None, gt=0)
    checks: list[Check] = Field(min_length=1)
    reference: str | None = None

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError('give exactly one of "prompt" (a string) or "messages" (a list)')
        return self


def load_golden(path: Path, name: str | None = None) -> list[GoldenCase]:
    """The cases of a golden set; a bad line is reported with the file (as `name`), line, case and field."""
    name = name or str(path)
    cases: list[GoldenCase] = []
    seen: dict[str, int] = {}
    for number, where, raw in read_input_jsonl(path, name):
        try:
            case = GoldenCase.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"]) or "(the case)"
            name = f" (case {raw.get('id')!r})" if isinstance(raw, dict) and raw.get("id") else ""
            message = error["msg"].removeprefix("Value error, ")
            raise UsageError(f"{where}{name}: field '{field}': {message}") from None
        if case.id in seen:
            raise UsageError(f"{where}: case id {case.id!r} repeats line {seen[case.id]}; ids must be unique")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise UsageError(f"{name}: no cases in the file")
    return cases


def golden_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- checks --------------------------------------------------------------------------------------
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def _fold(text: str, ignore_case: bool) -> str:
    return text.casefold() if ignore_case else text


def run_check(check, output: str) -> tuple[bool, str]:
    """(passed, what was found) for one check on one output."""
    if isinstance(check, Exact):
        got = output.strip()
        return _fold(got, check.ignore_case) == _fold(check.value.strip(), check.ignore_case), f"output {got[:80]!r}"
    if isinstance(check, Contains):
        wanted = [check.value] if isinstance(check.value, str) else check.value
        text = _fold(output, check.ignore_case)
        present = [w for w in wanted if _fold(w, check.ignore_case) in text]
        if check.type == "contains":
            missing = [w for w in wanted if w not in present]
            return not missing, "all present" if not missing else f"missing {missing}"
        return not present, "none present" if not present else f"found {present}"
    if isinstance(check, Regex):
        found = re.search(check.pattern, output, re.I if check.ignore_case else 0)
        return bool(found), f"matched {found.group(0)[:60]!r}" if found else f"no match for {check.pattern!r}"
    if isinstance(check, Json):
        body = output.strip()
        fenced = _FENCE.match(body)
        try:
            document = json.loads(fenced.group(1) if fenced else body)
        except json.JSONDecodeError as exc:
            return False, f"not JSON: {exc.msg} at character {exc.pos}"
        if check.schema_ is not None:
            errors = sorted(
                jsonschema.validators.validator_for(check.schema_)(check.schema_).iter_errors(document),
                key=lambda e: list(e.path),
            )
            if errors:
                at = "/".join(str(p) for p in errors[0].path) or "(root)"
                return False, f"schema: at {at}: {errors[0].message}"
        return True, "valid JSON" + (" matching the schema" if check.schema_ is not None else "")
    if isinstance(check, Number):
        found = _NUMBER.search(output)
        if not found:
            return False, "no number in the output"
        value = float(found.group(0).replace(",", ""))
        return abs(value - check.value) <= check.tolerance, f"found {value:g}"
    if isinstance(check, MaxLength):
        chars, words = len(output), len(output.split())
        ok = (check.chars is None or chars <= check.chars) and (check.words is None or words <= check.words)
        return ok, f"{chars} chars, {words} words"
    raise AssertionError(f"unknown check {check!r}")


def _rate(passed: int, n: int) -> Rate:
    return Rate(cases=n, passed=passed, success_rate=passed / n if n else None, ci95=wilson_interval(passed, n))


def evaluate(records: list[RequestRecord], cases: list[GoldenCase]) -> tuple[Quality, list[dict[str, Any]]]:
    """Each case's verdict on the run's measured records (eval.json's `cases`), and the aggregates:
    success rate with its Wilson interval, by tag and by check type, and the failures. A case with no
    record was not run (an interrupted run) and is listed, not counted."""
    by_id: dict[str, RequestRecord] = {}
    for record in records:
        if record.case_id is not None and record.measured:
            by_id.setdefault(record.case_id, record)  # the first answer to a case is its verdict
    verdicts = []
    for case in cases:
        record = by_id.get(case.id)
        if record is None:
            continue
        output = record.output_text or ""
        if not record.ok:
            checks = [{"type": "request", "passed": False, "detail": f"{record.status}: {record.error}"}]
        else:
            checks = [
                dict(zip(("type", "passed", "detail"), (c.type, *run_check(c, output)), strict=True))
                for c in case.checks
            ]
        verdicts.append(
            {
                "id": case.id,
                "tags": case.tags,
                "passed": all(c["passed"] for c in checks),
                "checks": checks,
                "output": output,
                "reference": case.reference,
                "request_id": record.request_id,
            }
        )
    passed = sum(v["passed"] for v in verdicts)
    tags = sorted({t for v in verdicts for t in v["tags"]})
    check_types = sorted({c["type"] for v in verdicts for c in v["checks"]})
    overall = _rate(passed, len(verdicts))
    quality = Quality(
        **overall.model_dump(),
        cases_in_set=len(cases),
        not_run=[c.id for c in cases if c.id not in by_id],
        by_tag={
            t: _rate(sum(v["passed"] for v in verdicts if t in v["tags"]), sum(1 for v in verdicts if t in v["tags"]))
            for t in tags
        },
        by_check={
            t: CheckCount(
                checks=sum(1 for v in verdicts for c in v["checks"] if c["type"] == t),
                passed=sum(1 for v in verdicts for c in v["checks"] if c["type"] == t and c["passed"]),
            )
            for t in check_types
        },
        failures=[
            CaseFailure(
                id=v["id"],
                tags=v["tags"],
                output=v["output"][:200],
                failed=[f"{c['type']}: {c['detail']}" for c in v["checks"] if not c["passed"]],
            )
            for v in verdicts
            if not v["passed"]
        ],
    )
    return quality, verdicts

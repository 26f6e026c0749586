"""Golden sets: cases with deterministic checks, their verdicts on a run's outputs, and the success rate
with a Wilson interval.

A golden set is JSONL, one case per line:

    {"id": "faq-refund-window", "prompt": "..." | "messages": [...], "tags": ["real"],
     "max_tokens": 64, "checks": [{"type": "contains", "value": "30 days"}, ...], "reference": "..."}

A case passes when its request succeeded and every check passes; a request the run stopped (cancelled) is a
case not run, listed and not counted. Checks:

    exact         output equals `value` (whitespace stripped; `ignore_case`)
    contains      output contains `value` (a string, or a list: all of them; `ignore_case`)
    not_contains  output contains none of `value` (`ignore_case`)
    regex         re.search(`pattern`) finds a match in the output, whitespace stripped (`ignore_case`)
    json          output is JSON (code fences allowed; NaN and Infinity are not JSON) and, given `schema`,
                  validates against it (its $refs point within it, checked when the set loads; `format`
                  keywords are annotations, as JSON Schema's default has them: use `pattern` to check a shape)
    number        the first number in the output is within `tolerance` of `value` (a sign counts where no
                  word runs into it: "COVID-19" is 19, "x = -5" is -5; ".5" is 0.5)
    max_length    output has at most `chars` characters and/or `words` words

`reference` is kept for people reviewing failures; no check reads it.

Variants (consistency under rephrasing). A case may carry `variants`: equivalent rephrasings of its prompt
(strings for a `prompt` case, message lists for a `messages` case), judged by the same checks. load_golden
gives each variant as a case of its own (id `<case>~<k>`, k = 1, 2, ...; `variant_of` the case) right
after its case, so a golden run sends every one of them. The success rate, its tags and the failures count
the cases' own prompts only (the variants are not independent trials); a case is *consistent* when every
prompt of it that was answered (its own and its variants') got the same verdict, and the summary gives the
share of consistent cases among those with at least one answered variant, with its Wilson interval.

    Example: case a passes on its prompt and both variants, case b fails on all three, case c passes on
    its prompt and on one variant but fails the other: a and b are consistent, c is not: 2/3 = 67 %.

Invalid output. Format checks are `json` (with or without a schema) and a `regex` marked `"format": true`
(a regex that defines the output's shape, such as `^[A-Z]{3}-[0-9]{4}$`; most regexes in a set test content,
like a support-hours answer, and are not). For the cases with a format check whose request succeeded, an
output that fails any format check is an *invalid output*; one that passes them all but fails another check
is a *wrong answer*. The invalid-output rate (with its Wilson interval) is reported apart from the success
rate, with the broken outputs counted by kind: not JSON, JSON against the schema, the format regex.

Drift between two golden runs of the same set: the cases answered in both are paired; b = passed before and
failed now, c = failed before and passed now; the exact McNemar test asks whether b and c differ more than
chance would make them under no change (each discordant case equally likely either way): two-sided
p = min(1, 2 x sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c)).

    Example: b = 6, c = 1: n = 7, P(X <= 1) = (C(7,0) + C(7,1)) / 2^7 = 8/128, p = 0.125 (not clear);
    b = 7, c = 0: p = 2 x 1/128 = 0.015625 (clear at 0.05).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

from bench.errors import UsageError
from bench.metrics.stats import wilson_interval
from bench.records import RequestRecord
from bench.results import read_input_jsonl
from bench.summary import CaseConsistency, CaseFailure, CheckCount, Consistency, OutputValidity, Quality, Rate

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

    @model_validator(mode="after")
    def _can_fail(self):
        wanted = [self.value] if isinstance(self.value, str) else self.value
        if not wanted or "" in wanted:  # "" is in every output, and no text is in all of none: the check is moot
            raise ValueError("give `value` as a text, or a list of texts, none of them empty")
        return self


class Regex(_Check):
    type: Literal["regex"]
    pattern: str
    ignore_case: bool = False
    format: bool = False  # the pattern defines the output's shape (counted in the invalid-output rate)

    @model_validator(mode="after")
    def _compiles(self):
        try:
            re.compile(self.pattern)
        except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999} overflows, not re.error
            raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
        return self


def _refs(node: Any):
    """Every $ref in a schema, at any depth."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _unresolvable_refs(schema: dict[str, Any], validator) -> list[str]:
    """The $refs that resolve to nothing within the schema: a check would fail on them mid-run, and nothing is
    fetched from elsewhere (a remote $ref is one of them)."""
    base = "urn:bench:golden-schema"
    specification = specification_with(validator.META_SCHEMA.get("$schema", ""), default=DRAFT202012)
    resolver = Registry().with_resource(base, specification.create_resource(schema)).resolver(base_uri=base)
    dangling = []
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            dangling.append(ref)
    return dangling


class Json(_Check):
    type: Literal["json"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _valid_schema(self):
        if self.schema_ is not None:
            validator = jsonschema.validators.validator_for(self.schema_)
            try:
                validator.check_schema(self.schema_)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"schema is not a valid JSON Schema: {exc.message}") from None
            dangling = _unresolvable_refs(self.schema_, validator)
            if dangling:
                raise ValueError(
                    f"schema's $ref {dangling[0]!r} names nothing in the schema; point it within it (#/$defs/NAME)"
                )
        return self

    @cached_property
    def validator(self):
        """The schema's validator, made once per check rather than once per output it judges."""
        return jsonschema.validators.validator_for(self.schema_)(self.schema_)


class Number(_Check):
    type: Literal["number"]
    value: float = Field(allow_inf_nan=False)
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)


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
    variants: list[Any] = Field(default_factory=list)  # equivalent rephrasings: prompts, or message lists
    variant_of: str | None = Field(default=None, exclude=True)  # set by load_golden on a variant's own case

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError('give exactly one of "prompt" (a string) or "messages" (a list)')
        for k, variant in enumerate(self.variants):
            if self.prompt is not None and not isinstance(variant, str):
                raise ValueError(f"variant {k + 1}: a prompt case's variants are strings (rephrased prompts)")
            if self.messages is not None and not (
                isinstance(variant, list) and all(isinstance(m, dict) for m in variant)
            ):
                raise ValueError(f"variant {k + 1}: a messages case's variants are message lists")
            if not variant:
                raise ValueError(f"variant {k + 1} is empty")
        return self

    @property
    def format_checks(self) -> list:
        return [c for c in self.checks if is_format_check(c)]

    def variant_cases(self) -> list[GoldenCase]:
        """Each variant as a case of its own: the same checks and limits, the rephrased input."""
        out = []
        for k, variant in enumerate(self.variants, start=1):
            text = {"prompt": variant} if isinstance(variant, str) else {"messages": variant}
            out.append(
                GoldenCase(
                    id=f"{self.id}{VARIANT_MARK}{k}",
                    tags=self.tags,
                    max_tokens=self.max_tokens,
                    checks=self.checks,
                    reference=self.reference,
                    variant_of=self.id,
                    **text,
                )
            )
        return out


VARIANT_MARK = "~"


def is_format_check(check) -> bool:
    return isinstance(check, Json) or (isinstance(check, Regex) and check.format)


def load_golden(path: Path, name: str | None = None) -> list[GoldenCase]:
    """Every prompt of a golden set to send: each case, then its variants as cases of their own (see the module
    docstring). A bad line is reported with the file (as `name`), line, case and field."""
    name = name or str(path)
    cases: list[GoldenCase] = []
    seen: dict[str, int] = {}
    for number, where, raw in read_input_jsonl(path, name):
        if isinstance(raw, dict) and "variant_of" in raw:
            raise UsageError(f"{where}: field 'variant_of' is set by the rig; list rephrasings under 'variants'")
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
    out = []
    for case in cases:
        out.append(case)
        for variant in case.variant_cases():
            if variant.id in seen:
                raise UsageError(
                    f"{name}, line {seen[variant.id]}: case id {variant.id!r} is the id of variant "
                    f"{variant.id.rsplit(VARIANT_MARK, 1)[1]} of case {case.id!r}; rename it"
                )
            out.append(variant)
    return out


def own_cases(cases: list[GoldenCase]) -> list[GoldenCase]:
    """The cases themselves, without their variants."""
    return [c for c in cases if c.variant_of is None]


def golden_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- checks --------------------------------------------------------------------------------------
# a sign only where no word runs into it (COVID-19 is 19), digits before a point optional (.5)
_NUMBER = re.compile(r"(?:(?<![\w.])[-+])?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"^```[ \t]*(?:json)?[ \t]*\n?(.*?)\s*```$", re.S | re.I)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is no JSON value")


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
        found = re.search(check.pattern, output.strip(), re.I if check.ignore_case else 0)  # as exact reads it
        return bool(found), f"matched {found.group(0)[:60]!r}" if found else f"no match for {check.pattern!r}"
    if isinstance(check, Json):
        body = output.strip()
        fenced = _FENCE.match(body)
        try:
            document = json.loads(fenced.group(1) if fenced else body, parse_constant=_not_json)
        except json.JSONDecodeError as exc:
            return False, f"not JSON: {exc.msg} at character {exc.pos}"
        except ValueError as exc:  # NaN, Infinity: Python reads them, JSON has none
            return False, f"not JSON: {exc}"
        if check.schema_ is not None:
            errors = sorted(
                check.validator.iter_errors(document),
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
        slack = 1e-9 * max(1.0, abs(check.value))  # 1 against 1.1 +- 0.1 is within it, whatever binary floats say
        return abs(value - check.value) <= check.tolerance + slack, f"found {value:g}"
    if isinstance(check, MaxLength):
        chars, words = len(output), len(output.split())
        ok = (check.chars is None or chars <= check.chars) and (check.words is None or words <= check.words)
        return ok, f"{chars} chars, {words} words"
    raise AssertionError(f"unknown check {check!r}")


def _rate(passed: int, n: int) -> Rate:
    return Rate(cases=n, passed=passed, success_rate=passed / n if n else None, ci95=wilson_interval(passed, n))


NOT_JSON, SCHEMA, FORMAT_REGEX = "not JSON", "JSON against the schema", "format regex"


def _format_break(check, passed: bool, detail: str) -> str | None:
    """How a failed format check broke the format (None when it passed or is no format check)."""
    if passed or not is_format_check(check):
        return None
    if isinstance(check, Regex):
        return FORMAT_REGEX
    return NOT_JSON if detail.startswith("not JSON") else SCHEMA


def verdict(case: GoldenCase, record: RequestRecord) -> dict[str, Any]:
    """One prompt's verdict: every check's result, whether it passed, and its outcome: passed, request
    failed, invalid output (a format check failed) or wrong answer."""
    output = record.output_text or ""
    broken: list[str] = []
    if not record.ok:
        checks = [{"type": "request", "passed": False, "detail": f"{record.status}: {record.error}"}]
    else:
        checks = []
        for c in case.checks:
            ok, detail = run_check(c, output)
            checks.append({"type": c.type, "passed": ok, "detail": detail})
            if kind := _format_break(c, ok, detail):
                broken.append(kind)
    passed = all(c["passed"] for c in checks)
    outcome = (
        "passed" if passed else "request failed" if not record.ok else "invalid output" if broken else "wrong answer"
    )
    return {
        "id": case.id,
        "variant_of": case.variant_of,
        "tags": case.tags,
        "passed": passed,
        "outcome": outcome,
        "format": None if not case.format_checks or not record.ok else ("invalid" if broken else "valid"),
        "format_broken": sorted(set(broken)),
        "checks": checks,
        "output": output,
        "reference": case.reference,
        "request_id": record.request_id,
    }


def consistency(verdicts: list[dict[str, Any]]) -> Consistency | None:
    """Per case with variants: the same verdict on every answered prompt of it? None when no case has an
    answered variant."""
    own = {v["id"]: v for v in verdicts if v.get("variant_of") is None}
    groups: dict[str, list[dict[str, Any]]] = {}
    for v in verdicts:
        if v.get("variant_of") is not None and v["variant_of"] in own:
            groups.setdefault(v["variant_of"], []).append(v)
    if not groups:
        return None
    rows = []
    for case_id, variants in groups.items():
        prompts = [own[case_id], *variants]
        rows.append(
            CaseConsistency(
                id=case_id,
                tags=own[case_id]["tags"],
                prompts=len(prompts),
                passed=sum(p["passed"] for p in prompts),
                consistent=len({p["passed"] for p in prompts}) == 1,
                verdicts={p["id"]: p["passed"] for p in prompts},
            )
        )
    consistent = sum(r.consistent for r in rows)
    return Consistency(
        cases=len(rows),
        consistent=consistent,
        share=consistent / len(rows),
        ci95=wilson_interval(consistent, len(rows)),
        consistent_passing=sum(r.consistent and r.passed == r.prompts for r in rows),
        consistent_failing=sum(r.consistent and r.passed == 0 for r in rows),
        variants_answered=sum(len(g) for g in groups.values()),
        inconsistent=[r for r in rows if not r.consistent],
    )


def output_validity(verdicts: list[dict[str, Any]]) -> OutputValidity | None:
    """The invalid-output rate over the cases (their own prompts) with a format check whose request
    succeeded, apart from wrong answers; None when no such case was answered."""
    judged = [v for v in verdicts if v.get("variant_of") is None and v.get("format") is not None]
    if not judged:
        return None
    invalid = [v for v in judged if v["format"] == "invalid"]
    kinds = sorted({k for v in invalid for k in v["format_broken"]})
    return OutputValidity(
        cases=len(judged),
        invalid=len(invalid),
        rate=len(invalid) / len(judged),
        ci95=wilson_interval(len(invalid), len(judged)),
        wrong_answer=sum(v["outcome"] == "wrong answer" for v in judged),
        passed=sum(v["passed"] for v in judged),
        by_kind={k: sum(k in v["format_broken"] for v in invalid) for k in kinds},
        invalid_cases=[v["id"] for v in invalid],
    )


def evaluate(records: list[RequestRecord], cases: list[GoldenCase]) -> tuple[Quality, list[dict[str, Any]]]:
    """Each prompt's verdict on the run's measured records (eval.json's `cases`, variants included), and
    the aggregates over the cases' own prompts: success rate with its Wilson interval, by tag and by check
    type, and the failures; then consistency across variants and the invalid-output rate. A case with no
    record was not run (an interrupted run) and is listed, not counted."""
    by_id: dict[str, RequestRecord] = {}
    for record in records:
        if record.case_id is not None and record.measured and record.status != "cancelled":  # stopped: not run
            by_id.setdefault(record.case_id, record)  # the first answer to a case is its verdict
    verdicts = [verdict(case, by_id[case.id]) for case in cases if case.id in by_id]
    own = [v for v in verdicts if v["variant_of"] is None]
    passed = sum(v["passed"] for v in own)
    tags = sorted({t for v in own for t in v["tags"]})
    check_types = sorted({c["type"] for v in own for c in v["checks"]})
    overall = _rate(passed, len(own))
    quality = Quality(
        **overall.model_dump(),
        cases_in_set=len(own_cases(cases)),
        not_run=[c.id for c in own_cases(cases) if c.id not in by_id],
        by_tag={
            t: _rate(sum(v["passed"] for v in own if t in v["tags"]), sum(1 for v in own if t in v["tags"]))
            for t in tags
        },
        by_check={
            t: CheckCount(
                checks=sum(1 for v in own for c in v["checks"] if c["type"] == t),
                passed=sum(1 for v in own for c in v["checks"] if c["type"] == t and c["passed"]),
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
            for v in own
            if not v["passed"]
        ],
        outcomes={k: sum(v["outcome"] == k for v in own) for k in OUTCOMES},
        consistency=consistency(verdicts),
        output_validity=output_validity(verdicts),
    )
    return quality, verdicts


OUTCOMES = ("passed", "wrong answer", "invalid output", "request failed")


# -- drift between two golden runs ----------------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """The two-sided exact McNemar p-value of b and c discordant pairs (see the module docstring)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def drift(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired verdicts of two golden runs (eval.json `cases`; the cases' own prompts, by id): which cases
    passed before and fail now (b), failed before and pass now (c), the exact McNemar p-value, the success
    rates over the paired cases, and the same for invalid outputs among cases with a format check."""
    old = {v["id"]: v for v in before if v.get("variant_of") is None}
    new = {v["id"]: v for v in after if v.get("variant_of") is None}
    paired = [i for i in old if i in new]
    regressed = [i for i in paired if old[i]["passed"] and not new[i]["passed"]]
    fixed = [i for i in paired if not old[i]["passed"] and new[i]["passed"]]
    n = len(paired)
    out: dict[str, Any] = {
        "paired": n,
        "only_before": [i for i in old if i not in new],
        "only_after": [i for i in new if i not in old],
        "regressed": regressed,
        "fixed": fixed,
        "b": len(regressed),
        "c": len(fixed),
        "p_value": mcnemar_exact(len(regressed), len(fixed)),
        "success_before": sum(old[i]["passed"] for i in paired) / n if n else None,
        "success_after": sum(new[i]["passed"] for i in paired) / n if n else None,
        "method": "exact McNemar test on the paired verdicts (two-sided binomial test of b against b + c)",
    }
    formatted = [i for i in paired if old[i].get("format") is not None and new[i].get("format") is not None]
    if formatted:
        broke = [i for i in formatted if old[i]["format"] == "valid" and new[i]["format"] == "invalid"]
        mended = [i for i in formatted if old[i]["format"] == "invalid" and new[i]["format"] == "valid"]
        out["invalid_output"] = {
            "paired": len(formatted),
            "before": sum(old[i]["format"] == "invalid" for i in formatted) / len(formatted),
            "after": sum(new[i]["format"] == "invalid" for i in formatted) / len(formatted),
            "broke": broke,
            "mended": mended,
            "p_value": mcnemar_exact(len(broke), len(mended)),
        }
    return out


def require_one_golden_set(runs: list[tuple[str, Quality | None]], what: str) -> None:
    """Success rates compare only on one golden set: each (label, quality) of a golden run must carry the
    same set's sha256 (runs without a measured quality are not compared)."""
    digests = {label: q.golden.get("sha256") for label, q in runs if q is not None and q.success_rate is not None}
    if len(set(digests.values())) > 1:
        raise UsageError(
            "the golden runs are of different golden sets ("
            + ", ".join(f"{label}: {str(d)[:12]}" for label, d in digests.items())
            + f"); {what} runs of one set"
        )

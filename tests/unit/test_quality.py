"""Golden-set checks, each against outputs that pass and fail, the Wilson interval, and evaluation."""

import json

import pytest

from bench.errors import UsageError
from bench.format import quality_lines
from bench.metrics.stats import wilson_interval
from bench.quality import GoldenCase, drift, evaluate, load_golden, own_cases, run_check
from bench.records import RequestRecord


def check(spec):
    return GoldenCase.model_validate({"id": "c", "prompt": "p", "checks": [spec]}).checks[0]


@pytest.mark.parametrize(
    "spec, passing, failing",
    [
        ({"type": "exact", "value": "Paris"}, "  Paris\n", "Paris."),
        ({"type": "exact", "value": "paris", "ignore_case": True}, "PARIS", "Lyon"),
        ({"type": "contains", "value": "30 days"}, "within 30 days.", "within 30 Days"),
        ({"type": "contains", "value": ["refund", "days"], "ignore_case": True}, "Refund in 5 DAYS", "refund soon"),
        ({"type": "not_contains", "value": ["ssn", "password"], "ignore_case": True}, "no secrets", "your Password is"),
        ({"type": "regex", "pattern": r"^\s*(billing|technical)\b"}, " billing issue", "a billing issue"),
        # the pattern sees the output stripped, as `exact` does: a model's leading newline is no other shape
        ({"type": "regex", "pattern": r"^[A-Z]{3}-[0-9]{4}$"}, "\nABC-1234\n", "ABC-12345"),
        ({"type": "json"}, '{"a": 1}', "{'a': 1}"),
        ({"type": "json"}, '```json\n{"a": 1}\n```', "```\nnot json\n```"),
        (
            {
                "type": "json",
                "schema": {
                    "type": "object",
                    "required": ["label"],
                    "properties": {"label": {"enum": ["billing", "account"]}},
                },
            },
            '{"label": "billing"}',
            '{"label": "sales"}',
        ),
        ({"type": "number", "value": 10063}, "It is 10,063.", "It is 10,064."),
        ({"type": "number", "value": 0.5, "tolerance": 0.01}, "p = 0.505", "p = 0.52"),
        ({"type": "json"}, '```JSON\n{"a": 1}\n```', '{"a": NaN}'),  # NaN is Python's, not JSON's
        ({"type": "json"}, '``` json\n{"a": 1}\n```', "Infinity"),
        ({"type": "number", "value": 19}, "COVID-19 cases rose", "COVID-20 cases rose"),  # a hyphen is no sign
        ({"type": "number", "value": -5}, "x = -5", "x = 5"),
        ({"type": "number", "value": 0.5}, "about .5 of them", "about 5 of them"),
        ({"type": "number", "value": 1.1, "tolerance": 0.1}, "1", "0.99"),  # on the tolerance: within it
        ({"type": "max_length", "chars": 10}, "short", "much longer than ten"),
        ({"type": "max_length", "words": 3}, "one two three", "one two three four"),
    ],
)
def test_each_check_passes_and_fails(spec, passing, failing):
    assert run_check(check(spec), passing)[0] is True
    assert run_check(check(spec), failing)[0] is False


def test_number_check_with_no_number_says_so():
    assert run_check(check({"type": "number", "value": 1}), "none") == (False, "no number in the output")


def test_wilson_interval_matches_the_textbook_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)  # Wilson (1927); Newcombe (1998) table
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 0) is None


def test_a_schema_with_its_refs_in_it_loads_and_checks(tmp_path):
    schema = {"$defs": {"Label": {"enum": ["billing"]}}, "properties": {"label": {"$ref": "#/$defs/Label"}}}
    spec = {"type": "json", "schema": schema}
    assert run_check(check(spec), '{"label": "billing"}')[0] is True
    assert run_check(check(spec), '{"label": "sales"}')[0] is False


def test_a_cancelled_request_is_a_case_not_run_not_a_failed_one():
    """Ctrl-C cancels the cases in flight: they were not answered, so they are listed, not counted against the
    model (the success rate prices each successful task)."""
    cases = [
        GoldenCase.model_validate({"id": i, "prompt": "p", "checks": [{"type": "contains", "value": "yes"}]})
        for i in ("a", "b")
    ]
    records = [
        RequestRecord(request_id=0, case_id="a", status="ok", output_text="yes"),
        RequestRecord(request_id=1, case_id="b", status="cancelled", error="the run was stopped"),
    ]
    result, _ = evaluate(records, cases)
    assert (result.passed, result.cases, result.not_run, result.success_rate) == (1, 1, ["b"], 1.0)


def test_evaluate_counts_failed_requests_as_failed_cases_and_lists_cases_not_run():
    cases = [
        GoldenCase.model_validate(
            {"id": i, "prompt": "p", "tags": tags, "checks": [{"type": "contains", "value": "yes"}]}
        )
        for i, tags in (("a", ["real"]), ("b", ["edge"]), ("c", ["real"]), ("d", []))
    ]
    records = [
        RequestRecord(request_id=0, case_id="a", status="ok", output_text="yes"),
        RequestRecord(request_id=1, case_id="b", status="ok", output_text="no"),
        RequestRecord(request_id=2, case_id="c", status="error", error="HTTP 500", output_text="yes"),
        RequestRecord(request_id=3, case_id="d", phase="warmup", status="ok", output_text="yes"),
    ]
    result, verdicts = evaluate(records, cases)
    assert (result.passed, result.cases, result.not_run) == (1, 3, ["d"])  # a warmup answer is no verdict
    assert result.by_tag["real"].passed == 1 and result.by_tag["real"].cases == 2
    assert [f.id for f in result.failures] == ["b", "c"]
    assert result.failures[1].failed == ["request: error: HTTP 500"]
    assert [v["id"] for v in verdicts] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "x", "prompt": "p"}', "line 1 (case 'x'): field 'checks'"),
        ('{"id": "x", "checks": [{"type": "exact", "value": "a"}]}', 'exactly one of "prompt"'),
        ('{"id": "x", "prompt": "p", "checks": [{"type": "regex", "pattern": "("}]}', "not a valid regular expression"),
        ('{"id": "x", "prompt": "p", "checks": [{"type": "json", "schema": {"type": 5}}]}', "not a valid JSON Schema"),
        ('{"id": "x", "prompt": "p", "checks": [{"type": "fuzzy"}]}', "field 'checks.0'"),
        (
            '{"id": "x", "prompt": "p", "checks": [{"type": "json", "schema": {"properties": '
            '{"t": {"$ref": "#/$defs/Ticket"}}}}]}',
            "schema's $ref '#/$defs/Ticket' names nothing in the schema",
        ),
        (
            '{"id": "x", "prompt": "p", "checks": [{"type": "json", "schema": {"$ref": "https://example.com/s.json"}}]}',
            "schema's $ref 'https://example.com/s.json' names nothing in the schema",
        ),
        ('{"id": "x", "prompt": "p", "checks": [{"type": "contains", "value": []}]}', "field 'checks.0"),
        ('{"id": "x", "prompt": "p", "checks": [{"type": "not_contains", "value": ""}]}', "field 'checks.0"),
        ('{"id": "x", "prompt": "p", "checks": [{"type": "number", "value": "nan"}]}', "field 'checks.0"),
        ('{"id": "x", "prompt": "p", "checks": [{"type": "number", "value": 1, "tolerance": "inf"}]}', "checks.0"),
        ("not json", "line 1: not valid JSON"),
    ],
)
def test_bad_golden_lines_name_the_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "set.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(UsageError, match=None) as caught:
        load_golden(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_repeated_ids_are_an_error(tmp_path):
    path = tmp_path / "set.jsonl"
    case = '{"id": "x", "prompt": "p", "checks": [{"type": "exact", "value": "a"}]}'
    path.write_text(f"{case}\n{case}\n")
    with pytest.raises(UsageError, match="repeats line 1"):
        load_golden(path)


# -- variants, consistency, invalid output, drift --------------------------------------------------------------
def _set(tmp_path, lines):
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_variants_become_cases_of_their_own_after_their_case(tmp_path):
    chat = {"messages": [{"role": "user", "content": "q"}], "variants": [[{"role": "user", "content": "q?"}]]}
    lines = [
        {"id": "a", "prompt": "p", "variants": ["p, rephrased", "p again"], "checks": [{"type": "json"}]},
        {"id": "b", **chat, "max_tokens": 9, "checks": [{"type": "json"}]},
    ]
    path = _set(tmp_path, lines)
    cases = load_golden(path)
    assert [(c.id, c.variant_of) for c in cases] == [("a", None), ("a~1", "a"), ("a~2", "a"), ("b", None), ("b~1", "b")]
    assert cases[1].prompt == "p, rephrased" and cases[4].messages == [{"role": "user", "content": "q?"}]
    assert cases[4].max_tokens == 9 and cases[4].checks == cases[3].checks
    assert [c.id for c in own_cases(cases)] == ["a", "b"]


@pytest.mark.parametrize(
    "line, message",
    [
        ({"id": "a", "prompt": "p", "variants": [["x"]], "checks": [{"type": "json"}]}, "variants are strings"),
        ({"id": "a", "messages": [], "variants": ["x"], "checks": [{"type": "json"}]}, "are message lists"),
        ({"id": "a", "messages": [], "variants": [["x"]], "checks": [{"type": "json"}]}, "are message lists"),
        ({"id": "a", "prompt": "p", "variants": [""], "checks": [{"type": "json"}]}, "variant 1 is empty"),
        ({"id": "a", "prompt": "p", "variant_of": "b", "checks": [{"type": "json"}]}, "list rephrasings under"),
    ],
)
def test_bad_variants_are_refused(tmp_path, line, message):
    with pytest.raises(UsageError) as caught:
        load_golden(_set(tmp_path, [line]))
    assert message in str(caught.value)


def test_a_case_id_that_collides_with_a_variant_is_refused(tmp_path):
    lines = [
        {"id": "a", "prompt": "p", "variants": ["q"], "checks": [{"type": "json"}]},
        {"id": "a~1", "prompt": "r", "checks": [{"type": "json"}]},
    ]
    with pytest.raises(UsageError, match="is the id of variant 1 of case 'a'"):
        load_golden(_set(tmp_path, lines))


def _records(outputs):
    return [
        RequestRecord(request_id=i, case_id=k, status="ok", output_text=v) for i, (k, v) in enumerate(outputs.items())
    ]


def test_consistency_across_variants_by_hand():
    """Three cases with two variants each, one case without. a passes on its prompt and both variants, b fails on
    all three, c passes on its prompt and one variant but fails the other: a and b are consistent, c is not:
    2/3 = 66.7%, Wilson 95% interval 20.8%-93.9% (centre (2/3 + 1.92/3) / (1 + 3.84/3) = 0.5648, half-width
    1.96 / 2.2805 x sqrt(0.2222/3 + 3.8415/36) = 0.3569). The success rate counts the cases' own prompts only:
    a, c and d pass, b fails: 3/4."""
    lines = [
        {"id": k, "prompt": k, "variants": [f"{k}1", f"{k}2"], "checks": [{"type": "contains", "value": "yes"}]}
        for k in "abc"
    ] + [{"id": "d", "prompt": "d", "checks": [{"type": "contains", "value": "yes"}]}]
    cases = [c for line in lines for c in (lambda g: [g, *g.variant_cases()])(GoldenCase.model_validate(line))]
    outputs = {"a": "yes", "a~1": "yes", "a~2": "yes", "b": "no", "b~1": "no", "b~2": "no"}
    outputs |= {"c": "yes", "c~1": "yes", "c~2": "no", "d": "yes"}
    quality, verdicts = evaluate(_records(outputs), cases)
    assert (quality.passed, quality.cases, quality.cases_in_set) == (3, 4, 4)
    c = quality.consistency
    assert (c.cases, c.consistent, c.consistent_passing, c.consistent_failing) == (3, 2, 1, 1)
    assert c.share == pytest.approx(2 / 3) and c.variants_answered == 6
    assert [round(x, 3) for x in c.ci95] == [0.208, 0.939] and c.ci95 == pytest.approx(wilson_interval(2, 3))
    assert [r.id for r in c.inconsistent] == ["c"] and c.inconsistent[0].verdicts == {
        "c": True,
        "c~1": True,
        "c~2": False,
    }
    assert len(verdicts) == 10 and quality.failures[0].id == "b"  # variants have verdicts, but no failure lines
    assert quality.by_tag == {}
    printed = quality_lines(quality, "eval.jsonl")
    assert "consistent under rephrasing: 2/3 cases with variants (67%, 95% Wilson interval 21%-94%)" in printed
    assert "1 pass and 1 fail on every prompt; inconsistent: c" in printed


def test_invalid_output_is_reported_apart_from_wrong_answers():
    """Five cases with a format check and one without. j1 is valid JSON with the right label (passed); j2 valid
    JSON with the other label (a wrong answer: its contains check fails); j3 is not JSON; j4 is JSON of the wrong
    shape (the schema fails); r1's answer breaks its format regex; t's regex tests content (no `format`), so it
    is no format case and its miss is a wrong answer. Invalid: j3 (not JSON), j4 (schema), r1 (format regex) =
    3 of 5 format cases (60%), apart from the one wrong answer among them (j2)."""
    schema = {"type": "object", "required": ["label"], "properties": {"label": {"enum": ["billing", "account"]}}}
    json_check = {"type": "json", "schema": schema}
    lines = [
        {"id": "j1", "prompt": "p", "checks": [json_check, {"type": "contains", "value": "billing"}]},
        {"id": "j2", "prompt": "p", "checks": [json_check, {"type": "contains", "value": "billing"}]},
        {"id": "j3", "prompt": "p", "checks": [json_check]},
        {"id": "j4", "prompt": "p", "checks": [json_check]},
        {"id": "r1", "prompt": "p", "checks": [{"type": "regex", "pattern": "^[A-Z]{3}-[0-9]{4}$", "format": True}]},
        {"id": "t", "prompt": "p", "checks": [{"type": "regex", "pattern": "open 9-18"}]},
    ]
    cases = [GoldenCase.model_validate(x) for x in lines]
    outputs = {"j1": '{"label": "billing"}', "j2": '{"label": "account"}', "j3": "Billing!", "j4": '{"tag": 1}'}
    outputs |= {"r1": "ABC-12", "t": "we are closed"}
    quality, verdicts = evaluate(_records(outputs), cases)
    v = quality.output_validity
    assert (v.cases, v.invalid, v.wrong_answer, v.passed) == (5, 3, 1, 1)
    assert v.rate == pytest.approx(0.6) and v.ci95 == pytest.approx(wilson_interval(3, 5))
    assert v.by_kind == {"JSON against the schema": 1, "format regex": 1, "not JSON": 1}
    assert v.invalid_cases == ["j3", "j4", "r1"]
    assert quality.outcomes == {"passed": 1, "wrong answer": 2, "invalid output": 3, "request failed": 0}
    assert {x["id"]: x["outcome"] for x in verdicts}["t"] == "wrong answer"
    printed = quality_lines(quality, "eval.jsonl")
    assert "invalid output: 3/5 answered cases with a format check (60%, 95% Wilson interval" in printed
    assert "(JSON against the schema 1, format regex 1, not JSON 1); wrong answers in a valid format: 1" in printed


def test_drift_pairs_the_cases_and_counts_both_ways():
    before = [{"id": i, "passed": p, "variant_of": None} for i, p in zip("abcdef", [1, 1, 1, 0, 0, 1], strict=True)]
    after = [{"id": i, "passed": p, "variant_of": None} for i, p in zip("abcdeg", [0, 0, 1, 1, 0, 1], strict=True)]
    d = drift(before, after)
    assert (d["paired"], d["regressed"], d["fixed"]) == (5, ["a", "b"], ["d"])
    assert (d["only_before"], d["only_after"]) == (["f"], ["g"])
    assert d["p_value"] == 1.0  # b = 2, c = 1: (1 + 3 + 3) x 2 / 8 > 1
    assert (d["success_before"], d["success_after"]) == (3 / 5, 2 / 5)

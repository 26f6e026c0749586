"""Golden-set checks, each against outputs that pass and fail, the Wilson interval, and evaluation."""

import pytest

from bench.errors import UsageError
from bench.metrics.stats import wilson_interval
from bench.quality import GoldenCase, evaluate, load_golden, run_check
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

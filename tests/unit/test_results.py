"""Run-directory files: atomic JSON, append-as-you-go JSONL, torn last lines."""

import pytest

from bench.errors import UsageError
from bench.results import JsonlAppender, RunDirectory, read_jsonl, write_json_atomic


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "manifest.json"
    write_json_atomic(target, {"status": "incomplete"})
    write_json_atomic(target, {"status": "complete"})
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    assert '"complete"' in target.read_text()


def test_appended_rows_are_on_disk_before_close(tmp_path):
    out = JsonlAppender(tmp_path / "requests.jsonl")
    out.append({"request_id": 1})
    assert read_jsonl(tmp_path / "requests.jsonl") == [{"request_id": 1}]  # another reader sees it now
    out.close()


def test_torn_last_line_is_skipped_but_damage_elsewhere_is_an_error(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_bytes(b'{"a": 1}\n{broken\n{"a": 3}\n')
    with pytest.raises(UsageError, match="line 2 is not valid JSON"):
        read_jsonl(path)


def test_existing_run_id_is_refused(tmp_path):
    RunDirectory.create(tmp_path, "r1")
    with pytest.raises(UsageError, match="already exists; choose another --run-id"):
        RunDirectory.create(tmp_path, "r1")

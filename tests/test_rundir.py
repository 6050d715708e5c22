"""RunDir's JSON-lines logs: appended per iteration, a last line cut off by a crash is dropped on reading."""

import json

import pytest

from prefopt.rundir import RunDir


def test_append_and_read_back_with_a_truncated_last_line(tmp_path):
    run = RunDir(str(tmp_path))
    run.append_jsonl("metrics.jsonl", [{"iteration": 0}])
    run.append_jsonl("metrics.jsonl", [{"iteration": 1}, {"iteration": 2}])
    run.append_jsonl("metrics.jsonl", [])
    assert [r["iteration"] for r in run.read_jsonl("metrics.jsonl")] == [0, 1, 2]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 3, "loss/to')  # a crash in the middle of an append
    assert [r["iteration"] for r in run.read_jsonl("metrics.jsonl")] == [0, 1, 2]
    run.write_jsonl("metrics.jsonl", run.read_jsonl("metrics.jsonl")[:2])  # what a resume does
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(json.dumps({"iteration": i}) + "\n" for i in (0, 1))


def test_a_corrupt_line_before_the_end_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(json.JSONDecodeError):
        RunDir(str(tmp_path)).read_jsonl("metrics.jsonl")
    assert RunDir(str(tmp_path)).read_jsonl("missing.jsonl") == []

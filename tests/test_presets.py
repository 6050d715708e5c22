"""The shipped evaluation presets (eval/presets/): every key is a flag of the command it is for, every value has a
source, and `${VAR}` paths come from the environment."""

from pathlib import Path

import pytest
import yaml

from prefopt.cli import build_parser
from prefopt.errors import ConfigError
from prefopt.eval.presets import load_presets

PRESETS = Path(__file__).parents[1] / "eval" / "presets"
COMMANDS = {"alpaca_eval_2": ["eval"], "arena_hard_v0.1": ["arena-hard"], "arena_hard_v2.0": ["arena-hard"],
            "mt_bench": ["mt-bench"]}  # fmt: skip
ENV = {"ARENA_HARD_AUTO": "/ah", "FASTCHAT": "/fc", "ALPACA_EVAL_DATA": "/ae"}


@pytest.mark.parametrize("path", sorted(PRESETS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_presets_are_flags_with_sources(path, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    parser = build_parser()
    record = yaml.safe_load(path.read_text())
    assert record["source"], f"{path.name} names no source"
    for command in COMMANDS.get(path.stem, ["eval", "arena-hard", "mt-bench"]):  # a paper's decoding: any of them
        flags = {a.dest for a in parser.evaluation_commands[command]._actions}
        values = load_presets([str(path)], flags, command)
        assert all("${" not in str(v) for v in values.values())


def test_preset_errors_name_the_file_and_key(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("judge_modle: grade\n")
    with pytest.raises(
        ConfigError, match=r"preset '.*bad.yaml': unknown key 'judge_modle' \(not a flag of prefopt eval\)"
    ):
        load_presets([str(bad)], {"judge_mode"}, "eval")
    bad.write_text("questions: ${NOT_SET_ANYWHERE}/q.jsonl\n")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match="key 'questions': environment variable NOT_SET_ANYWHERE is not set"):
        load_presets([str(bad)], {"questions"}, "arena-hard")

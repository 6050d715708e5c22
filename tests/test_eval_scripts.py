"""eval/benchmarks.sh end to end on a run directory: the three benchmarks with the shipped presets, against local
copies of the benchmarks' files laid out as their checkouts are (written here, small) and a local
OpenAI-compatible judge answering each mode (tests/api_replay.py)."""

import json
import os
import shutil
import subprocess

from api_replay import ReplayServer, with_logprobs, with_text
from helpers import REPO
from test_mt_bench import TEMPLATES

from prefopt.eval.arena_hard import answer_row, markdown_counts, write_jsonl


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _benchmark_files(root):
    alpaca = root / "alpaca"
    alpaca.mkdir()
    rows = [
        {"instruction": f"I{i}", "output": "ref", "generator": "gpt4_1106_preview", "dataset": "d"} for i in range(3)
    ]
    (alpaca / "alpaca_eval_gpt4_baseline.json").write_text(json.dumps(rows))
    ah = root / "arena-hard-auto"
    (ah / "config").mkdir(parents=True)
    (ah / "config" / "judge_config.yaml").write_text(
        'system_prompt: Compare.\nprompt_template: ["Q {question_1} A {answer_1} B {answer_2}"]\n'
        "regex_pattern: \\[\\[([AB<>=]+)\\]\\]\nnumber_of_judgment_attempts: 2\n"
    )
    data = ah / "data" / "arena-hard-v0.1"
    _jsonl(data / "question.jsonl", [{"question_id": f"q{i}", "category": "arena-hard-v0.1",
                                      "turns": [{"content": f"Q{i}"}]} for i in range(3)])  # fmt: skip
    rows = [answer_row("v0.1", f"q{i}", "gpt-4-0314", "an answer", markdown_counts("an answer", 2)) for i in range(3)]
    write_jsonl(data / "model_answer" / "gpt-4-0314.jsonl", rows)
    mt = root / "FastChat" / "fastchat" / "llm_judge" / "data"
    _jsonl(
        mt / "judge_prompts.jsonl",
        [{"name": n, "system_prompt": "Grade.", "prompt_template": t} for n, t in TEMPLATES],
    )
    questions = [{"question_id": 1, "category": "writing", "turns": ["a", "b"]},
                 {"question_id": 2, "category": "math", "turns": ["c", "d"]}]  # fmt: skip
    _jsonl(mt / "mt_bench" / "question.jsonl", questions)
    _jsonl(mt / "mt_bench" / "reference_answer" / "gpt-4.jsonl",
           [{"question_id": 2, "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["r1", "r2"]}]}])  # fmt: skip
    return {"ALPACA_EVAL_DATA": str(alpaca), "ARENA_HARD_AUTO": str(ah), "FASTCHAT": str(root / "FastChat")}


def _judge(body):
    if body.get("logprobs"):  # AlpacaEval's annotator: output_1 ("m") a little likelier, whatever the order
        return with_logprobs({"m": -0.5, "M": -1.0})
    if body["messages"][0]["content"] == "Compare.":
        return with_text("[[A=B]]")
    return with_text("Rating: [[7]]")


def test_benchmarks_script_on_a_run_directory(tmp_path, tiny_model_dir):
    shutil.copytree(tiny_model_dir, tmp_path / "my-run" / "final")
    env = {
        **os.environ,
        **_benchmark_files(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}",
    }
    env["ALPACA_EVAL_FLAGS"] = "--lc_data= --lc_variant length_controlled_minimal"
    with ReplayServer(_judge, models=("gpt-4-1106-preview", "gpt-4")) as server:
        flags = ["--judge_base_url", server.url, "--judge_api_key_env", "none", "--judge_cache", "false"]
        result = subprocess.run(
            ["bash", "eval/benchmarks.sh", tmp_path / "my-run", tmp_path / "out", *flags, "--max_new_tokens", "4"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (tmp_path / "out" / "summary.md").read_text().splitlines()
    # AlpacaEval: both orders give output_1 the same edge, so P = ½; Arena-Hard: every game a tie; MT-Bench: all 7s.
    assert summary[2].startswith("| AlpacaEval 2.0 (%) | WR 50.0 |")
    assert summary[3].startswith("| Arena-Hard v0.1 (%) | 50.0 |")
    assert summary[4].startswith("| MT-Bench (1-10) | 7.00 (turn 1 7.00, turn 2 7.00) |")
    arena = json.loads((tmp_path / "out" / "arena_hard_v0.1" / "results.json").read_text())
    assert (
        arena["judge"]["model"]
        if "model" in arena["judge"]
        else arena["judge"]["api"]["model"] == "gpt-4-1106-preview"
    )
    missing = subprocess.run(["bash", "eval/benchmarks.sh", tmp_path / "nothing", tmp_path / "o"], cwd=REPO,
                             env=env, capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2 and "holds no final policy" in missing.stderr

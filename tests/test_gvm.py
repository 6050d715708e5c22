"""GVM through the trainers: gradient norms, the probe-then-allocate stage and CLI runs of gvm_raft / gvm_grpo."""

import json

import pytest
from helpers import DIGIT_ARGS, DIGIT_TASK, digit_task_run, prefopt_ok


@pytest.fixture
def run(tmp_path, tiny_model_dir):
    from prefopt.algorithms.gvm import GVMRAFTParams

    run = digit_task_run("gvm_raft", GVMRAFTParams(num_samples=4, probe_samples=8), tiny_model_dir, tmp_path / "run")
    run.ctx.start_iteration(0, run.train_prompts[:40])
    return run


def test_gradient_norm_is_that_of_the_embedding_gradient(run):
    from prefopt.algorithms.gvm import gradient_norms
    from prefopt.ops import build_sequence_batch, response_token_logps

    samples = run.ctx.sample(run.ctx.prompts[:3], 1).samples
    norms = gradient_norms(run.ctx, samples)
    model = run.backend.unwrapped
    embed = model.get_input_embeddings().weight
    for s, norm in zip(samples, norms):
        batch = build_sequence_batch([s.prompt_ids], [s.response_ids], run.tokenizer.pad_token_id)
        model.zero_grad()
        response_token_logps(model, batch, run.ctx.scorer.allowed).sum().backward()
        assert norm == pytest.approx(float(embed.grad.norm()), rel=1e-5)
    model.zero_grad()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_probe_then_allocate_keeps_the_budget(run):
    from prefopt.algorithms.gvm import probe_and_allocate

    prompts = run.ctx.prompts
    counts, metrics = probe_and_allocate(run.ctx, prompts)
    assert sum(counts) == 4 * len(prompts)  # the uniform budget: num_samples × prompts
    (stream, _, probe) = run.ctx.rollouts[0]
    for i, group in enumerate(probe.groups()):
        accepted = sum(s.text == prompts[i].extra["answer"] for s in group)
        assert len(group) == 8 and (accepted > 0 or counts[i] == 0)  # p̂_i = 0 gets no samples
    assert 0 < metrics["gvm/probe_accept_rate"] < 1 and metrics["gvm/zero_prompts"] > 0
    assert metrics["gvm/variance_bound_ratio"] <= 1.0  # GVM's allocation minimises the bound


@pytest.mark.parametrize("name", ["gvm_raft", "gvm_grpo"])
def test_cli_iteration(tmp_path, tiny_model_dir, name):
    out = tmp_path / name
    args = ["--model_name_or_path", tiny_model_dir, "--dataset_name", DIGIT_TASK, *DIGIT_ARGS, "--output_dir", out]
    args += ["--num_iterations", "1", "--prompts_per_iteration", "32", "--disable_tqdm", "--torch_num_threads", "1"]
    prefopt_ok("train", name, *args, "--num_samples", "4", "--probe_samples", "4")
    (row,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["rollout/samples"] == 32 * 4 + 32 * 4  # the probe and the allocated budget
    assert "gvm/n_max" in row

"""Every algorithm's declared capabilities against what its collect does: π_ref is kept (a full copy of the weights
under full fine-tuning) exactly when the run reads it, and a two-phase train_step optimises as many times as its
``phases`` tell the LR schedule."""

import pytest
import torch
from helpers import digit_task_run

from prefopt.algorithms import ALGORITHMS, get_algorithm, stale_samples, uses_reference
from prefopt.anchors import Anchors
from prefopt.context import collect_shard
from prefopt.objective import loss_on_rows
from prefopt.optimise import Optimisation

# Settings that switch the reference on where a config decides it (the defaults are tested as they are).
VARIANTS = [(name, {}) for name in ALGORITHMS] + [
    ("dpo", {"reference": "initial"}),
    ("grpo", {"beta": 0.04}),
    ("rebel", {"kl_coef": 0.05}),
    ("nash_mp", {"prox_step": "pg"}),
]
FAST = {"num_samples": 2}  # where the config has it: fewer samples per prompt
TASK = {"grao": {"reference_column": "answer"}}  # what the digit-sum task needs besides the defaults


def _config(name, overrides):
    config_class = get_algorithm(name).config_class
    fields = config_class.__dataclass_fields__
    return config_class(**{k: v for k, v in (FAST | TASK.get(name, {}) | overrides).items() if k in fields})


def _ids(variants) -> list[str]:
    return [name + "".join(f"-{k}" for k in overrides) for name, overrides in variants]


@pytest.mark.parametrize(
    "name, overrides", VARIANTS, ids=[f"{n}{'-' + '-'.join(o) if o else ''}" for n, o in VARIANTS]
)
def test_the_reference_is_kept_exactly_when_collect_reads_it(name, overrides, tiny_model_dir, tmp_path, monkeypatch):
    algo_cfg = _config(name, overrides)
    run = digit_task_run(name, algo_cfg, tiny_model_dir, tmp_path / "run", prompts_per_iteration=4, max_new_tokens=1)
    declared = uses_reference(run.algorithm, algo_cfg)
    assert (run.ctx.anchors.ref_snapshot is not None) == declared  # full fine-tuning: a copy only when declared
    asked = []
    real = Anchors.token_logps

    def spy(self, prompt_ids, response_ids, policy="current"):
        asked.append(policy)
        return real(self, prompt_ids, response_ids, policy)

    monkeypatch.setattr(Anchors, "token_logps", spy)
    collect_shard(run.ctx, run.algorithm, run.train_prompts, 0)
    reads = "reference" in asked or (
        run.algorithm.mixes_reference is not None and run.algorithm.mixes_reference(algo_cfg)
    )
    assert reads == declared, (
        f"{name}: declares needs_ref={declared}, collect asked for {sorted(set(map(str, asked)))}"
    )


TWO_PHASE = [name for name in ALGORITHMS if get_algorithm(name).train_step is not None]


@pytest.mark.parametrize("name", TWO_PHASE)
def test_a_train_step_optimises_as_often_as_its_phases(name, tiny_model_dir, tmp_path, monkeypatch):
    """The LR schedule spans phases × the steps of one optimisation: train_step must call ctx.optimise that often."""
    algo_cfg = _config(name, {})
    run = digit_task_run(name, algo_cfg, tiny_model_dir, tmp_path / "run", prompts_per_iteration=4, max_new_tokens=1)
    calls = []
    real = Optimisation.optimise

    def counting(self, ctx, batch):
        calls.append(batch.num_rows)
        return real(self, ctx, batch)

    monkeypatch.setattr(Optimisation, "optimise", counting)
    batch, _ = collect_shard(run.ctx, run.algorithm, run.train_prompts, 0)
    run.algorithm.train_step(run.ctx, batch)
    assert len(calls) == run.algorithm.phases


def _shift_sampling_logps(engine, monkeypatch, shift: float) -> None:
    """The i-th sample the engine returns carries its token log-probs plus (i + 1)·``shift`` (unequal, so that no
    difference of two samples' log-probs cancels it): the sampling policy's log-probs change while the samples, the
    judge's verdicts and the current weights stay as they are."""
    real = engine.generate

    def shifted(*args, **kwargs):
        batch = real(*args, **kwargs)
        for i, s in enumerate(batch.samples):
            s.token_logps = s.token_logps + (i + 1) * shift
        return batch

    monkeypatch.setattr(engine, "generate", shifted)


# Every configuration whose stale-sample declaration differs, and the configs that decide it.
STALE_VARIANTS = [(name, {}) for name in ALGORITHMS] + [
    ("dpo", {"reference": "initial"}),
    ("apo", {"base": "sppo"}),
    ("apo", {"momentum": "params"}),
]


@pytest.mark.parametrize("name, overrides", STALE_VARIANTS, ids=_ids(STALE_VARIANTS))
def test_stale_samples_any_exactly_when_the_loss_reads_no_sampling_logps(
    name, overrides, tiny_model_dir, tmp_path, monkeypatch
):
    """``stale_samples: any`` claims the loss reads no log-probs of the sampling policy (docs/async.md): the same
    samples with other sampling log-probs must give the same loss at the same weights, and every other declaration
    must read them (as an anchor or as a ratio's denominator). Refused methods (None) are not asked."""
    algo_cfg = _config(name, {"num_samples": 4} | overrides)
    mode = stale_samples(get_algorithm(name), algo_cfg)
    if mode is None:
        pytest.skip(f"{name} refuses stale samples")
    # The digit's value as reward: every group has spread, so no method drops all its rows.
    judge = tmp_path / "judge.py"
    judge.write_text("def digit(prompts, responses, references=None):\n    return [float(r) for r in responses]\n")
    losses = []
    for shift in (0.0, -0.5):
        run = digit_task_run(
            name, algo_cfg, tiny_model_dir, tmp_path / f"run{shift}", prompts_per_iteration=4, max_new_tokens=1,
            judge="python_reward", judge_function=f"{judge}:digit",
        )  # fmt: skip
        _shift_sampling_logps(run.ctx.rollout, monkeypatch, shift)
        batch, _ = collect_shard(run.ctx, run.algorithm, run.train_prompts, 0)
        losses.append(loss_on_rows(run.ctx, run.algorithm.loss, batch, list(range(batch.num_rows)))[0].detach())
    reads = not torch.allclose(losses[0], losses[1], atol=1e-6, rtol=0)
    assert reads == (mode != "any"), f"{name} declares stale_samples={mode!r}, its loss reads them: {reads}"

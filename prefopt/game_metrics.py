"""Game metrics for a trainer whose judge is a matrix game (docs/conformance.md).

With a matrix-game judge the policy at a prompt is the softmax of the model's next-token logits restricted to
the N action tokens, so the theory's quantities can be read off the real trainer: after every iteration, for a
fixed set of probe prompts, the duality gap Gap(π_t) of the β-regularised game (β = the algorithm's own KL
coefficient, 0 for SPPO) and KL(π*_β ‖ π_t), where π_ref and π*_β are fixed from the initial weights. The
running average of the iterates is tracked too (SPPO's guarantee is for the average iterate).
"""

from __future__ import annotations

import torch

from prefopt import games
from prefopt.ops import pad_sequences


@torch.no_grad()
def action_probs(model, prompt_ids: list[list[int]], allowed_token_ids, pad_token_id: int, device) -> torch.Tensor:
    """The restricted next-token distribution at each prompt, [P, N] float64 (one left-padded forward pass)."""
    input_ids = pad_sequences(prompt_ids, pad_token_id, side="left").to(device)
    attention_mask = pad_sequences([[1] * len(p) for p in prompt_ids], 0, side="left").to(device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    was_training = model.training
    model.eval()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits[:, -1]
    model.train(was_training)
    return torch.softmax(logits[:, list(allowed_token_ids)].double(), dim=-1).cpu()


class GameMonitor:
    """Duality gap and KL to the equilibrium of the policy on probe prompts, iteration by iteration.

    Args:
        matrix: [N, N] preference matrix of the game.
        beta: KL coefficient of the regularised game the algorithm solves (0: the unregularised game).
        probe_prompt_ids: prompts at which the policy is read (the bandit uses one).
        policy_fn: ``prompt_ids -> [P, N]`` action distributions of the current model.
    """

    def __init__(self, matrix: torch.Tensor, beta: float, probe_prompt_ids, policy_fn):
        self.matrix = matrix.double()
        self.beta = beta
        self.probe_prompt_ids = probe_prompt_ids
        self.policy_fn = policy_fn
        self.ref = policy_fn(probe_prompt_ids)  # π_ref: the initial weights
        if beta > 0:
            self.equilibria = torch.stack([games.regularised_nash(self.matrix, beta, r) for r in self.ref])
        else:
            self.equilibria = games.nash_equilibrium(self.matrix).expand_as(self.ref)

    def _gap(self, policies: torch.Tensor) -> float:
        gaps = [games.duality_gap(self.matrix, pi, self.beta, ref) for pi, ref in zip(policies, self.ref)]
        return sum(gaps) / len(gaps)

    def metrics(self, policy_sum: list[list[float]] | None, iterations_done: int) -> tuple[dict, list[list[float]]]:
        """Metrics of the current policy and of the average iterate; returns the updated running sum."""
        current = self.policy_fn(self.probe_prompt_ids)
        total = current if policy_sum is None else torch.tensor(policy_sum, dtype=torch.float64) + current
        average = total / (iterations_done + 1)
        kl = torch.stack([games.kl(ne, pi) for ne, pi in zip(self.equilibria, current)]).mean()
        out = {
            "game/duality_gap": self._gap(current),
            "game/kl_to_ne": float(kl),
            "game/avg_duality_gap": self._gap(average),
            "game/policy_entropy": float(-(current * current.clamp(min=1e-300).log()).sum(-1).mean()),
        }
        return out, total.tolist()

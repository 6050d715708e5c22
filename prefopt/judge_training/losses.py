"""The judge-training objectives as pure tensor functions.

Bradley-Terry (reward_model, what TRL's RewardTrainer minimises):

    L_BT = −log σ(r(x, y⁺) − r(x, y⁻)).

Symmetrised pairwise (pairwise_model): with p(x, a, b) the classifier's probability that the first-shown response
wins (σ(logit) with 1 label, softmax(logits)[0] with 2), the pairwise_model judge answers

    P(y⁺ ≻ y⁻ | x) = ½ [p(x, y⁺, y⁻) + 1 − p(x, y⁻, y⁺)]

(``prefopt.judges.pairwise.symmetrise``), and training minimises exactly what it will be judged by:

    L_pair = −log P(y⁺ ≻ y⁻ | x).

It is computed in log space, log P = logsumexp(log p(x, y⁺, y⁻), log(1 − p(x, y⁻, y⁺))) − log 2, with both terms
log-sigmoids / log-softmaxes of the logits, so a confident model never takes the log of a rounded-off 0.
"""

from __future__ import annotations

import math

import torch


def log_first_wins(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p, log(1 − p)) with p = P(first-shown response wins), from classifier logits.

    Args:
        logits: [B, 1] (p = σ(logit)) or [B, 2] (p = softmax(logits)[0], label 0 = "A is better").

    Returns:
        two tensors [B].
    """
    if logits.shape[-1] == 1:
        return torch.nn.functional.logsigmoid(logits[:, 0]), torch.nn.functional.logsigmoid(-logits[:, 0])
    if logits.shape[-1] == 2:
        logps = torch.log_softmax(logits, dim=-1)
        return logps[:, 0], logps[:, 1]
    raise ValueError(f"a pairwise classifier has 1 or 2 labels, got {logits.shape[-1]}")


def symmetrised_log_preference(forward_logits: torch.Tensor, swapped_logits: torch.Tensor) -> torch.Tensor:
    """log P(y⁺ ≻ y⁻) = log ½ [p(x, y⁺, y⁻) + 1 − p(x, y⁻, y⁺)].

    Args:
        forward_logits: [B, num_labels], the classifier on template(x, a=y⁺, b=y⁻).
        swapped_logits: [B, num_labels], the classifier on template(x, a=y⁻, b=y⁺).

    Returns:
        [B], each ≤ 0.
    """
    log_p_forward, _ = log_first_wins(forward_logits)
    _, log_q_swapped = log_first_wins(swapped_logits)  # log(1 − p(x, y⁻, y⁺))
    return torch.logaddexp(log_p_forward, log_q_swapped) - math.log(2.0)


def symmetrised_pairwise_loss(forward_logits: torch.Tensor, swapped_logits: torch.Tensor) -> torch.Tensor:
    """L_pair = −log P(y⁺ ≻ y⁻ | x) per pair, [B] (see the module docstring)."""
    return -symmetrised_log_preference(forward_logits, swapped_logits)


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """L_BT = −log σ(r⁺ − r⁻) per pair, [B], from rewards [B] each (TRL's RewardTrainer loss, no margin)."""
    return -torch.nn.functional.logsigmoid(chosen_rewards - rejected_rewards)

"""The algorithm's objective on rows of a batch: one forward of the trained policy, then the algorithm's loss.

Shared by the loop's optimisation and by LoRA-GA's gradient estimate, which reads the same objective before
training starts.
"""

from __future__ import annotations

from prefopt.batch import Batch, PolicyLogps
from prefopt.context import Context


def policy_logps(ctx: Context, minibatch) -> PolicyLogps:
    """The trained policy's token log-probs on a micro-batch (one forward, with gradient)."""
    token_logps = ctx.scorer.token_logps(ctx.backend.model, minibatch.prompt_ids, minibatch.response_ids)
    b, s = minibatch.rows, minibatch.seqs_per_row
    return PolicyLogps(token_logps.view(b, s, -1), minibatch.mask)


def loss_on_rows(ctx: Context, loss_fn, batch: Batch, rows: list[int]):
    """Per-row losses and metrics of ``loss_fn`` (an algorithm's ``loss``) on the given rows, forward included."""
    minibatch = batch.select(rows).to_minibatch(ctx.backend.device)
    losses, step_metrics = loss_fn(ctx.algo_cfg, minibatch, policy_logps(ctx, minibatch))
    return losses, {"loss/total": losses.detach(), **step_metrics}

"""LoRA-GA initialisation (Wang, Yu, Li, "LoRA-GA: Low-Rank Adaptation with Gradient Approximation", NeurIPS 2024,
arXiv 2407.05000, section 3.2 and eq. 6-8).

1. **Gradient estimate** G = ∂L/∂W for every adapted linear layer W (d_out × d_in), averaged over
   ``lora_ga_batches`` micro-batches per process and summed across processes. L is the algorithm's own objective on
   its first iteration's batch (that batch is then trained on as iteration 0: nothing is collected twice), or
   with ``lora_ga_objective: sft`` the mean NLL of ``lora_ga_response_column``.
   G is accumulated from the layer's input x and output gradient g as Σ gᵀx (forward and tensor hooks), so no base
   weight needs requires_grad and no full-size gradient reaches the optimizer.
2. **SVD** G ≈ U S Vᵀ (``torch.svd_lowrank``, q = min(4r, d), 4 power iterations, as the paper's code; seeded).
   Departure: each singular pair's sign is fixed (the largest entry of u_i positive, v_i flipped with it). The
   SVD's own choice flips under rounding-level changes of G, so the same run under ZeRO-3 or another process count
   started from other adapters (B_0 columns of the opposite sign; the offset hides it at step 0, training does not).
3. **Assignment** (``lora_ga_direction``, default ArB2r): A_0 = V[:, 1..r]ᵀ, B_0 = U[:, r+1..2r].
4. **Scaling** (``lora_ga_variant``):
   - ``paper`` (default): A_0 and B_0 both times ζ = d_out^{1/4}/√γ, γ = ``lora_ga_gamma`` (16), no singular values
     (the paper's "stable" scale);
   - ``peft``: peft's own LoRA-GA (≥ 0.19): B_0 = U[:, r+1..2r]·diag(S_{r+1..2r})·ζ and A_0 unscaled. The singular
     values make B_0's size depend on the loss's scale; a test checks this variant against peft's code.
5. **Offset**: the output must not change, W_init = W_0 − s·B_0A_0 (s = lora_alpha/r, or /√r with rsLoRA). prefopt
   keeps W_0 and holds the offset in a frozen adapter (see :mod:`prefopt.adapters`): the same forward, and π_ref stays
   the disabled adapter.

Rationale (paper, section 3.2): with this start the first LoRA step ΔW = −η·s²(G·A_0ᵀA_0 + B_0B_0ᵀ·G) is G
projected onto its top singular directions, i.e. LoRA's first step approximates full fine-tuning's best rank-2r one.
Under DeepSpeed the estimate runs before the model is wrapped, on each process's share of the rows; the sums
are all-reduced and the factors broadcast from rank 0, so every process starts from identical adapters.
"""

from __future__ import annotations

import contextlib
import time

import torch

from prefopt.adapters import lora_layers, set_lora_ga
from prefopt.batch import Batch
from prefopt.context import Context, collect_shard
from prefopt.data import encode_response, reference_text
from prefopt.errors import ConfigError
from prefopt.objective import loss_on_rows

DIRECTIONS = {  # (indices of A's rows in Vᵀ, indices of B's columns in U) among the top 2r
    "ArB2r": lambda r: (range(0, r), range(r, 2 * r)),
    "A2rBr": lambda r: (range(r, 2 * r), range(0, r)),
    "ArBr": lambda r: (range(1, 2 * r, 2), range(0, 2 * r, 2)),
}


@contextlib.contextmanager
def weight_gradients(model, layers: dict):
    """Accumulate Σ gᵀx = ∂L/∂W (fp32) of each layer's base weight over every backward inside the block.

    Yields (sums, inputs): ``sums`` maps layer name → G; ``inputs`` collects the embedding outputs, made to require
    grad so that every layer's output gradient exists. Call ``torch.autograd.backward(loss, inputs=inputs)``: only
    activation gradients are computed, no parameter's ``.grad`` is touched.
    """
    sums: dict[str, torch.Tensor] = {}
    inputs: list[torch.Tensor] = []

    def on_forward(name):
        def hook(module, args, output):
            x = args[0].detach()

            def on_grad(g):
                G = g.reshape(-1, g.shape[-1]).float().T @ x.reshape(-1, x.shape[-1]).float()
                sums[name] = G if name not in sums else sums[name].add_(G)

            if output.requires_grad:
                output.register_hook(on_grad)

        return hook

    def on_embedding(module, args, output):
        inputs.append(output.requires_grad_(True))

    handles = [layer.get_base_layer().register_forward_hook(on_forward(name)) for name, layer in layers.items()]
    handles.append(model.get_input_embeddings().register_forward_hook(on_embedding))
    try:
        yield sums, inputs
    finally:
        for handle in handles:
            handle.remove()


def svd_factors(G: torch.Tensor, r: int, variant: str, direction: str, gamma: float, seed: int):
    """(A_0 [r, d_in], B_0 [d_out, r]) from the gradient G [d_out, d_in] (steps 2-4 above)."""
    d_out = G.shape[0]
    devices = [G.device] if G.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        U, S, V = torch.svd_lowrank(G.float(), q=min(4 * r, min(G.shape)), niter=4)
    # Each singular pair's sign is arbitrary, and the SVD's choice flips under rounding-level changes of G (another
    # process layout, ZeRO-3's gathered gradient): fix it, the largest entry of each u_i positive (v_i flips along,
    # so G = U S Vᵀ still), so that the same gradient gives the same A_0 and B_0 wherever it was computed.
    signs = torch.sign(U.gather(0, U.abs().argmax(0, keepdim=True)))[0]
    U, V = U * signs, V * signs
    a_idx, b_idx = (list(i) for i in DIRECTIONS[direction](r))
    A, B = V.T[a_idx], U[:, b_idx]
    zeta = d_out**0.25 / gamma**0.5
    if variant == "paper":
        return A * zeta, B * zeta
    return A, B @ torch.diag(S[b_idx]) * zeta


def _check_layers(layers: dict, r: int) -> None:
    if not layers:
        raise ConfigError("adapter lora_ga: no layer was adapted; check lora_target_modules")
    for name, layer in layers.items():
        base = layer.get_base_layer()
        if not isinstance(base, torch.nn.Linear):
            raise ConfigError(f"adapter lora_ga supports linear layers only; '{name}' is {type(base).__name__}")
        if 2 * r > min(base.out_features, base.in_features):
            raise ConfigError(
                f"config key 'lora_r': LoRA-GA takes 2r = {2 * r} singular vectors, more than layer '{name}' "
                f"({base.out_features}×{base.in_features}) has"
            )


def _sft_rows(ctx: Context, prompts, count: int):
    """Per-row NLL of the response column on the first ``count`` training prompts (a seeded order)."""
    column = ctx.cfg.lora_ga_response_column
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(ctx.cfg.seed))[:count].tolist()
    chosen = [prompts[i] for i in order]
    responses = [encode_response(ctx.tokenizer, p.prompt, reference_text(p, column)) for p in chosen]

    def loss(rows: list[int]) -> torch.Tensor:
        targets = [responses[i] for i in rows]
        logps = ctx.scorer.token_logps(ctx.backend.model, [chosen[i].prompt_ids for i in rows], targets)
        return -logps.sum(-1) / torch.tensor([len(t) for t in targets], device=logps.device)

    return len(chosen), loss


def _objective(ctx: Context, algorithm, train_prompts, count: int):
    """(rows available, per-row loss of a row list, the first iteration's batch or None)."""
    if ctx.cfg.lora_ga_objective == "sft":
        return (*_sft_rows(ctx, train_prompts, count), None)
    local, elapsed = collect_shard(ctx, algorithm, train_prompts, 0)
    batch = Batch.concat(ctx.backend.all_gather_object(local))  # every process's rows, as the loop trains on
    if batch.num_rows == 0:
        raise ConfigError("adapter lora_ga: the first iteration produced no training rows to estimate a gradient on")
    weights = batch.weights()

    def losses(rows: list[int]) -> torch.Tensor:
        per_row = loss_on_rows(ctx, algorithm.loss, batch, rows)[0]
        return per_row * weights[rows].to(per_row)

    return batch.num_rows, losses, (local, elapsed)


def initialise(ctx: Context, algorithm, train_prompts) -> tuple | None:
    """Estimate the gradient, set A_0/B_0 and the offset on ``ctx.backend.model`` (a peft model, not yet wrapped by
    DeepSpeed). Returns (first iteration's batch, its collect seconds) when the objective was the algorithm's."""
    cfg, backend = ctx.cfg, ctx.backend
    model = backend.model
    layers = lora_layers(model)
    _check_layers(layers, cfg.lora_r)
    start = time.perf_counter()
    if backend.zero_stage != 3:  # ZeRO-3 loaded the weights sharded, each shard already on its device
        model.to(backend.device)
    model.train()
    with backend.gathered():  # ZeRO-3 loads the model sharded: the estimate needs whole weights, as generation does
        rows, prefetched, grads = _estimate_gradients(ctx, algorithm, train_prompts, layers)
    factors = {}
    for name, layer in layers.items():
        base = layer.get_base_layer()
        G = grads.pop(name, None)  # None: the objective did not reach this layer
        G = torch.zeros(base.out_features, base.in_features, device=backend.device) if G is None else G
        backend.sum_across_(G)
        A, B = svd_factors(G, cfg.lora_r, cfg.lora_ga_variant, cfg.lora_ga_direction, cfg.lora_ga_gamma, cfg.seed)
        factors[name] = (backend.broadcast_(A.contiguous()), backend.broadcast_(B.contiguous()))
    set_lora_ga(model, factors)
    if backend.is_main:
        print(
            f"[prefopt] LoRA-GA: {cfg.lora_ga_objective} gradient on {rows} rows, {len(layers)} layers, "
            f"{time.perf_counter() - start:.1f}s",
            flush=True,
        )
    return prefetched


def _estimate_gradients(ctx: Context, algorithm, train_prompts, layers):
    """(rows used in all, the first iteration's batch or None, this process's share of G per layer)."""
    cfg, backend = ctx.cfg, ctx.backend
    world, rank = backend.world_size, backend.rank
    wanted = cfg.lora_ga_batches * cfg.per_device_train_batch_size * world
    num_rows, row_losses, prefetched = _objective(ctx, algorithm, train_prompts, wanted)
    total = min(num_rows, wanted)
    local = list(range(total))[rank::world]
    with weight_gradients(backend.model, layers) as (sums, inputs):
        for i in range(0, len(local), cfg.per_device_train_batch_size):
            inputs.clear()
            loss = row_losses(local[i : i + cfg.per_device_train_batch_size]).sum() / total
            torch.autograd.backward(loss, inputs=inputs)
    return total, prefetched, sums

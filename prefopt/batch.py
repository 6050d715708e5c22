"""What an algorithm's ``collect`` hands to the optimiser, and what its ``loss`` receives.

A :class:`Batch` is R training rows with S sequences each (S = 1 for per-response targets, 2 for pairs, G for a
group), stored ragged. The loop shuffles rows and cuts them into micro-batches; each micro-batch's forward is
packed or padded by the scorer (``prefopt.scoring``). Shapes in a :class:`MiniBatch`: B rows, S sequences per
row, L response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prefopt.ops import pad_float_sequences, pad_sequences


@dataclass
class Batch:
    """R rows × S sequences, row-major (sequence s of row r is at index r * S + s).

    Attributes:
        prompt_ids, response_ids: [R * S] token id lists.
        seqs_per_row: S.
        row_data: per-row tensors, each [R, ...] (targets, anchor log-probs such as ``ref_logps`` [R, S]).
        token_data: per-sequence token tensors, each a list of [len(response)] tensors (e.g. sampling log-probs).
        metrics: collect-time statistics logged with the iteration (e.g. ``pref/pairs_kept``), each a mean.
        metric_weights: how many items each metric averages over, to combine the processes' values exactly
            (e.g. the responses behind ``reward/mean``); a metric without one averages over collect's prompts.
        row_weights: [R], each row's weight in the loss (rows that are an exact expectation, ``game_exact``);
            None: every row weighs the same.
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    seqs_per_row: int
    row_data: dict[str, torch.Tensor] = field(default_factory=dict)
    token_data: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    metric_weights: dict[str, float] = field(default_factory=dict)
    row_weights: torch.Tensor | None = None

    def __post_init__(self):
        if len(self.prompt_ids) != len(self.response_ids) or len(self.prompt_ids) % self.seqs_per_row:
            raise ValueError("prompt_ids and response_ids must hold R * seqs_per_row sequences")
        for key, value in self.row_data.items():
            if value.shape[0] != self.num_rows:
                raise ValueError(f"row_data[{key!r}] has {value.shape[0]} rows, expected {self.num_rows}")
        if self.row_weights is not None and self.row_weights.shape != (self.num_rows,):
            raise ValueError(f"row_weights has shape {tuple(self.row_weights.shape)}, expected ({self.num_rows},)")

    def weights(self) -> torch.Tensor:
        """[R] float64 row weights scaled to mean 1 (all 1 without ``row_weights``): a step's loss is the weighted
        mean of its rows' losses."""
        if self.row_weights is None:
            return torch.ones(self.num_rows, dtype=torch.float64)
        w = self.row_weights.double()
        return w * (self.num_rows / w.sum())

    @property
    def num_rows(self) -> int:
        return len(self.prompt_ids) // self.seqs_per_row

    def select(self, rows: list[int]) -> Batch:
        """The sub-batch of the given rows (in that order)."""
        s = self.seqs_per_row
        seq_idx = [r * s + k for r in rows for k in range(s)]
        index = torch.as_tensor(rows, dtype=torch.long)
        return Batch(
            prompt_ids=[self.prompt_ids[i] for i in seq_idx],
            response_ids=[self.response_ids[i] for i in seq_idx],
            seqs_per_row=s,
            row_data={k: v[index] for k, v in self.row_data.items()},
            token_data={k: [v[i] for i in seq_idx] for k, v in self.token_data.items()},
            row_weights=None if self.row_weights is None else self.row_weights[index],
        )

    @classmethod
    def concat(cls, batches: list[Batch]) -> Batch:
        """The rows of several batches (e.g. every process's), in order; metrics are not carried over."""
        first = batches[0]
        if any(
            b.seqs_per_row != first.seqs_per_row
            or b.row_data.keys() != first.row_data.keys()
            or (b.row_weights is None) != (first.row_weights is None)
            for b in batches
        ):
            raise ValueError("batches to concatenate need the same sequences per row, row_data keys and weighting")
        return cls(
            prompt_ids=[ids for b in batches for ids in b.prompt_ids],
            response_ids=[ids for b in batches for ids in b.response_ids],
            seqs_per_row=first.seqs_per_row,
            row_data={k: torch.cat([b.row_data[k] for b in batches]) for k in first.row_data},
            token_data={k: [t for b in batches for t in b.token_data[k]] for k in first.token_data},
            row_weights=None if first.row_weights is None else torch.cat([b.row_weights for b in batches]),
        )

    def to_minibatch(self, device: torch.device | str = "cpu") -> MiniBatch:
        """The rows on the device, per-token data padded to the longest response (the forward's layout, packed or
        padded, is the scorer's: ``prefopt.scoring``)."""
        b, s = self.num_rows, self.seqs_per_row
        width = max((len(r) for r in self.response_ids), default=0)
        tokens = {k: pad_float_sequences(v, width).view(b, s, width).to(device) for k, v in self.token_data.items()}
        mask = pad_sequences([[1] * len(r) for r in self.response_ids], 0, side="right").bool()
        return MiniBatch(
            rows=b,
            seqs_per_row=s,
            row={k: v.to(device) for k, v in self.row_data.items()},
            token=tokens,
            mask=mask.view(b, s, width).to(device),
            prompt_ids=self.prompt_ids,
            response_ids=self.response_ids,
        )


@dataclass
class MiniBatch:
    """One micro-batch on the device.

    Attributes:
        row: per-row tensors [B, ...].
        token: per-token tensors [B, S, L] (0 on padding).
        mask: [B, S, L] bool, true on response tokens.
        prompt_ids, response_ids: the B * S sequences the policy's forward scores, row-major.
    """

    rows: int
    seqs_per_row: int
    row: dict[str, torch.Tensor]
    token: dict[str, torch.Tensor]
    mask: torch.Tensor
    prompt_ids: list[list[int]] = field(default_factory=list)
    response_ids: list[list[int]] = field(default_factory=list)


@dataclass
class PolicyLogps:
    """The trained policy's log-probs on a micro-batch's responses (with gradient).

    Attributes:
        token_logps: [B, S, L], 0 on padding.
        mask: [B, S, L] bool.
    """

    token_logps: torch.Tensor
    mask: torch.Tensor

    @property
    def logps(self) -> torch.Tensor:
        """[B, S] sequence log-probs log π(y | x) (sum over tokens)."""
        return (self.token_logps * self.mask).sum(-1)

    @property
    def lengths(self) -> torch.Tensor:
        """[B, S] response lengths in tokens."""
        return self.mask.sum(-1)

    @property
    def mean_logps(self) -> torch.Tensor:
        """[B, S] length-normalised log-probs (1/|y|) log π(y | x); 0 for an empty response."""
        return self.logps / self.lengths.clamp(min=1)


def pair_sequences(pairs) -> tuple[list, list, torch.Tensor]:
    """(prompt_ids, response_ids, the sampling policy's log-probs [R, 2]) of (winner, loser) rollout Sample pairs."""
    flat = [s for pair in pairs for s in pair]
    logps = torch.tensor([s.logp for s in flat], dtype=torch.float32).view(-1, 2)
    return [s.prompt_ids for s in flat], [s.response_ids for s in flat], logps

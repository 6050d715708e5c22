"""PairRM, the pairwise reward model of LLM-Blender, loaded and run by prefopt's own code.

PairRM (Jiang, Ren, Lin 2023, "LLM-Blender: Ensembling Large Language Models with Pairwise Ranking and Generative
Fusion", arXiv 2306.02561), the judge of the official SPPO and APO pipelines, is a DeBERTa-v3 cross-encoder over a
prompt and two responses. llm-blender breaks on transformers 5 (trl#4918), so prefopt reads the
``llm-blender/PairRM-hf`` layout itself. The facts below are from llm-blender 0.0.2.

Layout (``blender_utils.py:tokenize_pair``, ``pairrm.py:DebertaV2PairRM.forward``): a row is ``[CLS] <|source|> x
[SEP] [CLS] <|candidate1|> y [SEP] [CLS] <|candidate2|> y' [SEP]``, each part the tokenizer's encoding of marker +
text cut from the right to 1224 tokens (source) and ``(2048 - len(source)) // 2`` (each candidate); right padding.
The last hidden states at the markers h_s, h_1, h_2 go through one head ``Linear(2H, H) → tanh → Linear(H, T)`` as
[h_s; h_1] and [h_s; h_2]; the logit l(x, y, y') is the mean over the T tasks of the difference. Weight and config
names are llm-blender's (``pretrained_model.*``, ``head_layer.{1,4}.*``, ``source_prefix_id``, ...).

Probability: P(y ≻ y' | x) = σ(l(x, y, y') − l(x, y', y)), both orders scored. ``Blender.compare(...,
return_logits=True)`` in its default mode "[A,B]+[B,A]" is exactly l(x, y, y') − l(x, y', y) (``rank`` →
``CrossCompareReranker._full_predict`` → ``gpt_eval/utils.py:get_scores_from_cmps``: the two scores are ±½ of it),
and σ of the scores' difference is the probability of TRL's PairRMJudge (softmax) and SPPO's compute_prob.py. So
P(y ≻ y') + P(y' ≻ y) = 1 and P(y ≻ y) = ½ exactly. Chat prompts follow ``Blender.compare_conversations``: source
= its instruction + ``USER: u_1\\nAssistant: <Response 1>\\nUSER: ...``, candidate = ``<Response 1>: a_1\\n...``
(the prompt's assistant turns, then the response); string prompts are used as they are.

Departures: a system message (llm-blender takes none) is put before the first user turn, newline-joined; the head
reads the marker positions the judge placed (llm-blender searches the ids for them, which a text containing
``<|candidate1|>`` breaks); ``tokenizer.json`` is read with ``tokenizers`` as transformers 4 reads it (transformers
5's DebertaV2Tokenizer swaps in its own normaliser). Blender's batched collator
also blanks a literal "[SEP]" and sizes candidates by the batch's longest source; prefopt follows the PairRM-hf
path. ``max_length`` and ``template`` do not apply.

A group of K responses (``preference_matrices``, what SPPO asks) is scored as the official SPPO pipeline scores it
(``scripts/rank.py``: ``Blender.rank(..., return_scores=True)``, then ``compute_prob.py``): every ordered pair once,
s_i = (1/K) Σ_j (l_ij − l_ji) (``get_scores_from_cmps``, the j = i term 0) and P(y_i ≻ y_j) = σ(s_i − s_j), with
``matrix="scores"`` (the default); ``matrix="pairs"`` gives each pair its own σ(l_ij − l_ji) instead. The two agree
for K = 2; the scores' matrix is transitive (a Bradley-Terry model on s), the pairs' need not be.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from prefopt.errors import JudgeError, first_line
from prefopt.judges.base import PreferenceJudge, Prompt, check_values
from prefopt.judges.reward_model import run_batched

MARKERS = ("<|source|>", "<|candidate1|>", "<|candidate2|>")  # config keys source/cand1/cand2_prefix_id
MARKER_KEYS = ("source_prefix_id", "cand1_prefix_id", "cand2_prefix_id")
# tokenize_pair's defaults: the lengths PairRM was trained with (train_ranker.sh).
SOURCE_MAX_LENGTH, CANDIDATE_MAX_LENGTH = 1224, 412
# Blender.compare_conversations' instruction, its typo included: PairRM saw this exact text.
CONVERSATION_INSTRUCTION = (
    "Finish the following coversation in each i-th turn by filling in <Response i> with your response."
)
_EXPECTED = (
    "expected the llm-blender/PairRM-hf layout: config.json (model_type deberta-v2 with n_tasks, source_prefix_id, "
    "cand1_prefix_id, cand2_prefix_id), model.safetensors or pytorch_model.bin, tokenizer.json"
)


class PairRMModel(nn.Module):
    """DeBERTa-v2 encoder + PairRM's pairwise head, with llm-blender's parameter names.

    Args:
        config: a ``DebertaV2Config`` with PairRM's extra keys ``n_tasks`` and ``drop_out``.
    """

    def __init__(self, config):
        from transformers import DebertaV2Model

        super().__init__()
        self.config, hidden, drop = config, config.hidden_size, getattr(config, "drop_out", 0.05)
        self.pretrained_model = DebertaV2Model(config)
        # Indices 1 and 4 hold the weights, as in DebertaV2PairRM.
        head = [nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Dropout(drop), nn.Linear(hidden, config.n_tasks)]
        self.head_layer = nn.Sequential(nn.Dropout(drop), *head)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
        """Logits l(x, y, y') [B] (> 0: candidate 1 judged better) of right-padded rows ``input_ids`` [B, L] with
        ``attention_mask`` [B, L] (1 on real tokens) and their source/candidate-1/candidate-2 marker positions
        ``marks`` [B, 3]."""
        hidden = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        enc = hidden[torch.arange(hidden.shape[0], device=hidden.device)[:, None], marks]  # [B, 3, H]
        left = self.head_layer(torch.cat([enc[:, 0], enc[:, 1]], dim=-1))  # [B, n_tasks]
        right = self.head_layer(torch.cat([enc[:, 0], enc[:, 2]], dim=-1))
        return (left - right).mean(dim=-1)


def _resolve(name_or_path: str) -> Path:
    """A local folder, or the Hub snapshot of ``name_or_path`` (only the files the judge reads)."""
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        return Path(expanded)
    if os.path.exists(expanded) or name_or_path.startswith((".", "/", "~")):
        reason = "not a folder" if os.path.exists(expanded) else "no such folder"
        raise JudgeError(f"'{name_or_path}' is not a PairRM checkpoint ({reason}); {_EXPECTED}")
    try:
        from huggingface_hub import snapshot_download

        # The config, tokenizer.json and one weights file: pytorch_model.bin only where there is no safetensors.
        for patterns in (["*.json", "model.safetensors"], ["*.json", "pytorch_model.bin"]):
            folder = Path(snapshot_download(name_or_path, allow_patterns=patterns))
            if (folder / patterns[-1]).is_file():
                break
        return folder
    except Exception as err:  # network, auth, a missing repo: one line for the user
        raise JudgeError(f"cannot fetch the PairRM checkpoint '{name_or_path}': {first_line(err)}") from err


def load_pairrm(name_or_path: str, dtype: str = "float32", device: str = "cpu"):
    """(model in eval mode without gradients, tokenizer, marker ids) from a PairRM-hf folder or Hub id.

    The tokenizer is a ``tokenizers.Tokenizer`` read from ``tokenizer.json``. Anything that is not a PairRM checkpoint
    is a one-line :class:`JudgeError` naming the path.
    """
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import DebertaV2Config

    from prefopt.models import resolve_dtype

    folder = _resolve(name_or_path)

    def bad(reason: str) -> JudgeError:
        return JudgeError(f"'{name_or_path}' is not a PairRM checkpoint ({reason}); {_EXPECTED}")

    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise bad(f"config.json: {first_line(err)}") from err
    missing = [key for key in ("model_type", "n_tasks", *MARKER_KEYS) if key not in raw]
    if raw.get("model_type") != "deberta-v2" or missing:
        raise bad(f"config.json has model_type {raw.get('model_type')!r} and lacks {missing}")
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()]
    if not weights:
        raise bad("no model.safetensors or pytorch_model.bin")
    if not (folder / "tokenizer.json").is_file():  # what transformers 4's fast tokenizer (llm-blender's) reads
        raise bad("no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    marker_ids = [int(raw[key]) for key in MARKER_KEYS]
    if [tokenizer.token_to_id(marker) for marker in MARKERS] != marker_ids:
        raise bad(f"tokenizer.json does not give {', '.join(MARKERS)} the config's ids {marker_ids}")
    model = PairRMModel(DebertaV2Config.from_dict(raw))
    try:
        if weights[0].suffix == ".safetensors":
            state = load_file(weights[0])
        else:
            state = torch.load(weights[0], map_location="cpu", weights_only=True)
        # Buffers older transformers saved (position_ids) are not parameters of the model.
        state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
        result = model.load_state_dict(state, strict=False)  # shape mismatches raise here
    except Exception as err:  # a truncated file, a pickle that is not a state dict, wrong shapes
        raise bad(f"{weights[0].name}: {first_line(err)}") from err
    if result.missing_keys or result.unexpected_keys:
        keys = (result.missing_keys or result.unexpected_keys)[:3]
        what = "missing" if result.missing_keys else "unexpected"
        raise bad(f"{weights[0].name} does not fit DebertaV2PairRM: {what} weights {keys}")
    torch_dtype = resolve_dtype(dtype)
    if torch_dtype == "auto":  # keep the checkpoint's own floating dtype
        torch_dtype = next(v.dtype for v in state.values() if v.is_floating_point())
    model = model.to(device=device, dtype=torch_dtype).eval().requires_grad_(False)
    return model, tokenizer, marker_ids


def conversation_texts(messages: Sequence[dict], response: str) -> tuple[str, str]:
    """(source, candidate) for a chat prompt and one response, as ``Blender.compare_conversations`` builds them."""
    turns = [dict(m) for m in messages]
    if turns and str(turns[0].get("role")).lower() == "system":  # departure: llm-blender has no system turn
        system = turns.pop(0)["content"]
        if turns:
            turns[0]["content"] = f"{system}\n{turns[0]['content']}"
    roles = [str(m.get("role")).lower() for m in turns]
    if not roles or roles[-1] != "user" or any(r != ("user", "assistant")[i % 2] for i, r in enumerate(roles)):
        raise JudgeError(
            f"pairrm reads chat prompts as alternating user/assistant turns that end with a user turn; got {roles}"
        )
    users = [str(m["content"]) for m in turns[0::2]]
    answers = [str(m["content"]) for m in turns[1::2]] + [response]
    source = "\n".join(f"USER: {u}\nAssistant: <Response {k + 1}>" for k, u in enumerate(users))
    candidate = "\n".join(f"<Response {k + 1}>: {a}" for k, a in enumerate(answers))
    return CONVERSATION_INSTRUCTION + source, candidate


class PairRMJudge(PreferenceJudge):
    """P(y ≻ y' | x) = σ(l(x, y, y') − l(x, y', y)) from a PairRM checkpoint (see the module docstring).

    Args:
        model_name_or_path: ``llm-blender/PairRM-hf`` or a local folder in that layout.
        batch_size: encoder rows per forward pass (each pair is two rows, one per order).
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (the checkpoint's own).
        device: where the model runs.
        source_max_length, candidate_max_length: PairRM's truncation lengths (1224, 412); the row holds at most
            source_max_length + 2 * candidate_max_length tokens.
        matrix: how a group's preference matrix is made: ``scores`` (SPPO's pipeline) or ``pairs``.
    """

    name = "pairrm"

    def __init__(
        self,
        model_name_or_path: str,
        batch_size: int = 16,
        dtype: str = "float32",
        device: str = "cpu",
        source_max_length: int = SOURCE_MAX_LENGTH,
        candidate_max_length: int = CANDIDATE_MAX_LENGTH,
        matrix: str = "scores",
    ):
        if matrix not in ("scores", "pairs"):
            raise JudgeError(f"pairrm: judge_pairrm_matrix must be scores or pairs, got {matrix!r}")
        self.matrix = matrix
        self.model, self.tokenizer, self.marker_ids = load_pairrm(model_name_or_path, dtype, device)
        self.pad_id = int(getattr(self.model.config, "pad_token_id", None) or 0)
        self.batch_size = batch_size
        self.source_max_length = source_max_length
        self.candidate_max_length = candidate_max_length
        self.name = f"pairrm:{model_name_or_path}"

    def _encode_text(self, text: str, max_length: int) -> list[int]:
        """``tokenizer.encode(text, max_length=max_length, truncation=True)`` of transformers 4's fast tokenizer:
        [CLS] text [SEP], the text cut from the right (the backend's own truncation, as transformers 4 sets it)."""
        self.tokenizer.enable_truncation(max_length)
        return self.tokenizer.encode(text).ids

    def encode(self, prompt: Prompt, response_a: str, response_b: str) -> tuple[list[int], tuple[int, int, int]]:
        """(token ids of one row with ``response_a`` as candidate 1, positions of its 3 markers)."""
        if isinstance(prompt, str):
            source, cand_a, cand_b = prompt, response_a, response_b
        else:
            source, cand_a = conversation_texts(prompt, response_a)
            cand_b = conversation_texts(prompt, response_b)[1]
        source_ids = self._encode_text(MARKERS[0] + source, self.source_max_length)
        limit = (self.source_max_length + 2 * self.candidate_max_length - len(source_ids)) // 2
        ids_a = self._encode_text(MARKERS[1] + cand_a, limit)
        ids_b = self._encode_text(MARKERS[2] + cand_b, limit)
        # Each part starts with [CLS] and then its marker (the tokenizer keeps added tokens whole).
        marks = (1, len(source_ids) + 1, len(source_ids) + len(ids_a) + 1)
        ids = source_ids + ids_a + ids_b
        if [ids[m] for m in marks] != self.marker_ids:
            raise JudgeError(f"{self.name}: the tokenizer does not encode {', '.join(MARKERS)} as the config's ids")
        return ids, marks

    def logits(self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str]):
        """l(x, a, b) per row, a as candidate 1 (llm-blender's ``DebertaV2PairRM`` logits): float32 CPU [B]."""
        rows = [self.encode(x, a, b) for x, a, b in zip(prompts, responses_a, responses_b, strict=True)]
        device = next(self.model.parameters()).device

        def forward(batch: list[list[int]]) -> torch.Tensor:
            # Each row carries its 3 marker positions in front of its ids (run_batched keys rows by content).
            ids = [torch.tensor(row[3:], dtype=torch.long) for row in batch]
            input_ids = pad_sequence(
                ids, batch_first=True, padding_value=self.pad_id
            )  # right padding, as tokenize_pair
            attention_mask = pad_sequence([torch.ones_like(row) for row in ids], batch_first=True)
            marks = torch.tensor([row[:3] for row in batch], dtype=torch.long)
            return self.model(input_ids.to(device), attention_mask.to(device), marks.to(device))

        return run_batched([list(marks) + ids for ids, marks in rows], self.batch_size, forward)

    def _preference(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str], references=None
    ) -> torch.Tensor:
        return torch.sigmoid(self.order_gaps(prompts, responses_a, responses_b))

    def order_gaps(self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str]):
        """l(x, a, b) − l(x, b, a) per row (float64 [B]); both orders in one call share the length-sorted batches."""
        n = len(prompts)
        if n == 0:
            return torch.zeros(0, dtype=torch.float64)
        firsts, seconds = list(responses_a) + list(responses_b), list(responses_b) + list(responses_a)
        both = self.logits(list(prompts) * 2, firsts, seconds).double()
        return both[:n] - both[n:]

    def preference_matrices(self, prompts: Sequence[Prompt], groups: Sequence[Sequence[str]], references=None):
        """Per prompt, P(y_i ≻ y_j) = σ(s_i − s_j) from the group's scores (``matrix="scores"``, SPPO's pipeline),
        or each pair's own probability (``matrix="pairs"``). Each unordered pair is two encoder rows either way.

        Returns:
            list of float64 tensors [K_k, K_k].
        """
        if self.matrix == "pairs":
            return super().preference_matrices(prompts, groups, references)
        index = [(k, i, j) for k, g in enumerate(groups) for i in range(len(g)) for j in range(i + 1, len(g))]
        xs = [prompts[k] for k, _, _ in index]
        firsts, seconds = [groups[k][i] for k, i, _ in index], [groups[k][j] for k, _, j in index]
        with self._timed():
            pair_gaps = self.order_gaps(xs, firsts, seconds)
        gaps = [torch.zeros(len(g), len(g), dtype=torch.float64) for g in groups]  # l_ij − l_ji
        for (k, i, j), gap in zip(index, pair_gaps.tolist()):
            gaps[k][i, j], gaps[k][j, i] = gap, -gap
        mats = []
        for gap in gaps:
            scores = gap.mean(dim=1)  # s_i, over all K columns (the diagonal's 0 included, as llm-blender's mean)
            mats.append(torch.sigmoid(scores[:, None] - scores[None, :]))
        probs = check_values(torch.tensor([mats[k][i, j].item() for k, i, j in index]), self.name, "preference", True)
        self._record("preference", xs, {"response_a": firsts, "response_b": seconds}, probs)
        return mats

"""The `real` tier of the scorer (`pytest -q -m real`): on SmolLM2-135M-Instruct the probe keeps packing and the
chunked head on, and on a realistic batch (three chat prompts, answers of 48, 104 and 213 tokens) the packed rows,
the chunked head and both together give the padded forward's log-probs within the rounding bound τ that
prefopt/scoring.py derives (K·φ + c ulps, φ measured on this batch by scoring each sequence alone), while attention
that crosses the packed sequences misses it by far. Before the bound, the probe's fixed 1e-4 refused packing here."""

import pytest
import torch
from test_scoring import Crossing

from prefopt.models import load_causal_lm, load_tokenizer
from prefopt.scoring import Plan, Scorer, pack_sequences, rounding_bound

pytestmark = pytest.mark.real

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CHATS = [
    ("What is the capital of France?",
     "The capital of France is Paris. It lies on the Seine in the north of the country, and it has been the seat of "
     "the French government for most of the last thousand years. Paris is also the largest city in France."),
    ("How do plants make their food?",
     "Plants make their food by photosynthesis. Their leaves hold chlorophyll, a green pigment that absorbs sunlight. "
     "With the energy of that light, the plant joins carbon dioxide, which it takes in from the air through small "
     "pores in its leaves, with water, which its roots draw up from the soil. The result is glucose, a sugar the "
     "plant burns for energy or stores as starch, and oxygen, which it releases into the air. This is why forests and "
     "oceans full of algae matter so much for the air we breathe."),
    ("Give me three tips for learning to cook.",
     "Here are three tips for learning to cook. First, start with a few simple recipes and make each of them several "
     "times. Repeating a dish teaches you how it should look, smell and taste at every step, and you will soon notice "
     "when something is going wrong before it is too late to fix it. Second, learn to use a sharp knife safely and "
     "well. Most of the time you spend in a kitchen goes into preparing ingredients, and good knife skills make that "
     "work faster, safer and more pleasant. Hold the food with your fingertips curled under, let the blade rest "
     "against your knuckles, and cut with a smooth rocking motion rather than pressing down hard. Third, taste as you "
     "go. Season a little at a time, taste, and adjust: salt, acid such as lemon juice or vinegar, and heat all "
     "change a dish more than you might expect. Keep notes of what worked and what did not, and do not be afraid of "
     "mistakes, because every cook learns most from the dishes that did not turn out as planned."),
]  # fmt: skip


def chat_batch(tokenizer):
    """Prompt ids (the chat template with the generation prompt) and answer ids (ending in the end-of-turn token)."""
    prompts, responses = [], []
    for question, answer in CHATS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
        prompts.append(list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids))
        responses.append(tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"])
    return prompts, responses


@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_packed_and_chunked_log_probs_equal_the_padded_forward_within_the_bound_on_smollm2(real_model_dir, dtype):
    """Measured on CPU: float32, noise φ 1.3e-5, bound τ 1.2e-4, the paths' deviation 0, crossing 14 (10⁵·τ);
    bfloat16, φ 0.14 (a batch of one takes another sdpa kernel), τ 1.1, the paths 0, crossing 14 (12·τ)."""
    model = load_causal_lm(str(real_model_dir), dtype=dtype).to(DEVICE).eval()
    tokenizer = load_tokenizer(str(real_model_dir))
    notices = []
    scorer = Scorer(tokenizer.pad_token_id, DEVICE, notice=notices.append)
    assert scorer.plan(model) == Plan(True, True) and notices == []  # before the bound: packed False, a notice
    prompts, responses = chat_batch(tokenizer)
    assert [len(r) for r in responses] == [48, 104, 213]
    # Rows as wide as the longest sequence (252): the 141- and 85-token sequences share the second one.
    assert pack_sequences(prompts, responses, tokenizer.pad_token_id)["input_ids"].shape == (2, 252)
    with torch.no_grad():
        plain = scorer._forward(model, prompts, responses, Plan(False, False))[0]
        alone = torch.zeros_like(plain)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            alone[i, : len(r)] = scorer._forward(model, [p], [r], Plan(False, False))[0][0]
        tol = rounding_bound(plain, alone)
        chunked = scorer._forward(model, prompts, responses, Plan(False, True))[0]
        ours = scorer.token_logps(model, prompts, responses)  # packed and chunked, as training scores
        crossed = scorer._forward(Crossing(model), prompts, responses, Plan(True, False))[0]
    off = {name: float((logps - plain).abs().max()) for name, logps in
           (("chunked", chunked), ("packed and chunked", ours), ("crossing", crossed))}  # fmt: skip
    print(f"\n{dtype} on {DEVICE}: max |log p| {float(plain.abs().max()):.3g}, noise "
          f"{float((alone - plain).abs().max()):.2g}, bound {tol:.2g}, max |Δ log p| {off}")  # fmt: skip
    assert off["chunked"] <= tol and off["packed and chunked"] <= tol, (tol, off)
    assert off["crossing"] > (1000 if dtype == "float32" else 5) * tol, (tol, off)

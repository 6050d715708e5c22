"""Judges against values computed independently here: manual forwards of the same tiny models, hand arithmetic."""

import math
import textwrap

import pytest
import torch

from prefopt.errors import JudgeError
from prefopt.games import check_preference_matrix, random_preference_matrix, rock_paper_scissors
from prefopt.judges import (
    JUDGE_KINDS,
    GenerativeJudge,
    MatrixGameJudge,
    NonTransitiveJudge,
    PairwiseModelJudge,
    PythonPreferenceJudge,
    PythonRewardJudge,
    RewardJudge,
    RewardModelJudge,
    build_judge,
)
from prefopt.judges.python import load_function

CHAT = [{"role": "user", "content": "Tell me about the moon."}]
PROMPTS = [
    "Explain why the sky is blue.",
    CHAT,
    "Hello",
    [{"role": "system", "content": "Be short."}, {"role": "user", "content": "What is a cat?"}],
    "Write a poem about the ocean and the sun and the bright star in the dark sky, please.",
    CHAT,
    "Why?",
]
RESPONSES = [
    "Light scatters.",
    "The moon is big and bright.",
    "Hello world!",
    "A small animal.",
    "The ocean is blue, the sun is bright.",
    "It is a rock.",
    "Because of the reason.",
]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- reward model


@pytest.fixture(scope="module")
def reward_pair(tiny_reward_dir):
    """The reward model and tokenizer loaded straight from transformers, for manual forwards."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_reward_dir)


def manual_reward_ids(tokenizer, prompt, response):
    if isinstance(prompt, str):
        return tokenizer(prompt + "\n" + response)["input_ids"]
    text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def manual_logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_reward_model_matches_manual_forward_and_is_batch_invariant(tiny_reward_dir, reward_pair):
    model, tokenizer = reward_pair
    expected = torch.tensor(
        [
            manual_logits(model, manual_reward_ids(tokenizer, p, r))[0].item()
            for p, r in zip(PROMPTS, RESPONSES, strict=True)
        ]
    )
    one = RewardModelJudge(tiny_reward_dir, batch_size=1).reward(PROMPTS, RESPONSES)
    seven = RewardModelJudge(tiny_reward_dir, batch_size=7).reward(PROMPTS, RESPONSES)
    assert one.dtype == torch.float64 and one.shape == (7,)
    torch.testing.assert_close(one.float(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(seven.float(), expected, atol=1e-5, rtol=0)
    # The chat prompt went through the template: exactly one BOS at the start.
    chat_ids = manual_reward_ids(tokenizer, CHAT, RESPONSES[1])
    assert chat_ids[0] == tokenizer.bos_token_id and chat_ids.count(tokenizer.bos_token_id) == 1


def test_reward_model_truncates_from_the_left(tiny_reward_dir, reward_pair):
    model, tokenizer = reward_pair
    ids = manual_reward_ids(tokenizer, PROMPTS[4], RESPONSES[4])
    assert len(ids) > 8
    expected = manual_logits(model, ids[-8:])[0].item()
    judge = RewardModelJudge(tiny_reward_dir, max_length=8)
    got = judge.reward(PROMPTS[4:6], RESPONSES[4:6])
    assert got[0].item() == pytest.approx(expected, abs=1e-5)


def test_reward_model_preferences_are_bradley_terry(tiny_reward_dir, reward_pair):
    model, tokenizer = reward_pair
    judge = RewardModelJudge(model=model, tokenizer=tokenizer, batch_size=3)
    assert isinstance(judge, RewardJudge)
    rewards = judge.reward(PROMPTS, RESPONSES)
    torch.testing.assert_close(
        rewards, RewardModelJudge(tiny_reward_dir).reward(PROMPTS, RESPONSES), atol=1e-5, rtol=0
    )

    swapped = list(reversed(RESPONSES))
    pref = judge.preference(PROMPTS, RESPONSES, swapped)
    r_swapped = judge.reward(PROMPTS, swapped)
    torch.testing.assert_close(pref, torch.sigmoid(rewards - r_swapped), atol=1e-6, rtol=0)

    groups = [RESPONSES[:3], RESPONSES[3:7]]
    prompts = [PROMPTS[1], "Why?"]
    for prompt, group, mat in zip(prompts, groups, judge.preference_matrices(prompts, groups), strict=True):
        assert mat.shape == (len(group), len(group))
        torch.testing.assert_close(mat.diagonal(), torch.full((len(group),), 0.5, dtype=torch.float64))
        torch.testing.assert_close(mat + mat.T, torch.ones_like(mat), atol=1e-12, rtol=0)
        r = [manual_logits(model, manual_reward_ids(tokenizer, prompt, y))[0].item() for y in group]
        for i in range(len(group)):
            for j in range(len(group)):
                assert mat[i, j].item() == pytest.approx(sigmoid(r[i] - r[j]), abs=1e-5)


# ---------------------------------------------------------------- pairwise model


def test_pairwise_model_matches_hand_formula_and_is_symmetric(tiny_reward_dir, reward_pair):
    model, tokenizer = reward_pair
    template = "{prompt}\n\n[Response A]\n{a}\n\n[Response B]\n{b}"
    judge = PairwiseModelJudge(tiny_reward_dir, batch_size=3)
    a, b = RESPONSES[:4], RESPONSES[3:7]
    prompts = PROMPTS[:4]
    got = judge.preference(prompts, a, b)
    for k, (x, ya, yb) in enumerate(zip(prompts, a, b, strict=True)):
        x_text = x if isinstance(x, str) else "\n".join(m["content"] for m in x)
        logit_ab = manual_logits(model, tokenizer(template.format(prompt=x_text, a=ya, b=yb))["input_ids"])[0]
        logit_ba = manual_logits(model, tokenizer(template.format(prompt=x_text, a=yb, b=ya))["input_ids"])[0]
        expected = 0.5 * (sigmoid(logit_ab.item()) + 1.0 - sigmoid(logit_ba.item()))
        assert got[k].item() == pytest.approx(expected, abs=1e-5)
    reverse = judge.preference(prompts, b, a)
    torch.testing.assert_close(got + reverse, torch.ones(4, dtype=torch.float64), atol=1e-12, rtol=0)
    same = judge.preference(prompts, a, a)
    torch.testing.assert_close(same, torch.full((4,), 0.5, dtype=torch.float64), atol=1e-12, rtol=0)


def tiny_classifier(tokenizer, num_labels: int):
    from transformers import LlamaForSequenceClassification

    from prefopt.tiny import tiny_llama_config

    config = tiny_llama_config(tokenizer)
    config.num_labels = num_labels
    torch.manual_seed(3)
    return LlamaForSequenceClassification(config).eval()


def test_pairwise_model_two_labels_uses_label_zero_as_a_wins(tokenizer):
    model = tiny_classifier(tokenizer, 2)
    judge = PairwiseModelJudge(model=model, tokenizer=tokenizer, template="Q: {prompt} | A: {a} | B: {b}")
    got = judge.preference(["Hi"], ["Hello world!"], ["Bad."])
    p_ab = torch.softmax(manual_logits(model, tokenizer("Q: Hi | A: Hello world! | B: Bad.")["input_ids"]), -1)[0]
    p_ba = torch.softmax(manual_logits(model, tokenizer("Q: Hi | A: Bad. | B: Hello world!")["input_ids"]), -1)[0]
    assert got.item() == pytest.approx(0.5 * (p_ab.item() + 1.0 - p_ba.item()), abs=1e-5)


def test_pairwise_model_rejects_bad_heads_and_templates(tokenizer, tiny_reward_dir):
    with pytest.raises(JudgeError, match="3"):
        PairwiseModelJudge(model=tiny_classifier(tokenizer, 3), tokenizer=tokenizer)
    with pytest.raises(JudgeError, match=r"\{a\} and \{b\}"):
        PairwiseModelJudge(tiny_reward_dir, template="{prompt} {a}")
    with pytest.raises(JudgeError, match="only the fields"):
        PairwiseModelJudge(tiny_reward_dir, template="{prompt} {a} {b} {c}")


# ---------------------------------------------------------------- generative judge


def test_generative_judge_matches_next_token_softmax(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = "[CONTEXT] {prompt} [RESPONSE A] {a} [RESPONSE B] {b}\nWhich response is better? Answer A or B: "
    id_a = tokenizer("A", add_special_tokens=False)["input_ids"][0]
    id_b = tokenizer("B", add_special_tokens=False)["input_ids"][0]

    def first_wins(x, ya, yb) -> float:
        text = template.format(prompt=x if isinstance(x, str) else "\n".join(m["content"] for m in x), a=ya, b=yb)
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        probs = torch.softmax(manual_logits(model, ids)[-1], dim=-1)  # next-token distribution [V]
        return (probs[id_a] / (probs[id_a] + probs[id_b])).item()

    judge = GenerativeJudge(tiny_model_dir, batch_size=4)
    prompts, a, b = PROMPTS[:3], RESPONSES[:3], RESPONSES[4:7]
    got = judge.preference(prompts, a, b)
    for k in range(3):
        expected = 0.5 * (first_wins(prompts[k], a[k], b[k]) + 1.0 - first_wins(prompts[k], b[k], a[k]))
        assert got[k].item() == pytest.approx(expected, abs=1e-5)
    torch.testing.assert_close(got + judge.preference(prompts, b, a), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(judge.preference(prompts, a, a), torch.full((3,), 0.5, dtype=torch.float64))


def test_generative_judge_plain_text_without_chat_template(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None  # the plain-text path: the filled template is the whole input
    template, choices = "Q: {prompt}\n1: {a}\n2: {b}\nBetter:", (" one", " two")
    judge = GenerativeJudge(model=model, tokenizer=tokenizer, template=template, choices=choices)
    ids_1, ids_2 = (tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in choices)

    def first_wins(ya, yb) -> float:
        text = template.format(prompt="Tell me about the moon.", a=ya, b=yb)
        probs = torch.softmax(manual_logits(model, tokenizer(text)["input_ids"])[-1], dim=-1)
        return (probs[ids_1] / (probs[ids_1] + probs[ids_2])).item()

    got = judge.preference([CHAT], ["Big."], ["It is a rock."]).item()
    assert got == pytest.approx(
        0.5 * (first_wins("Big.", "It is a rock.") + 1.0 - first_wins("It is a rock.", "Big."))
    )


def test_generative_judge_is_left_padding_invariant(tiny_model_dir):
    judge = GenerativeJudge(tiny_model_dir, batch_size=8)
    alone = judge.preference(["Hi"], ["Yes."], ["No."])
    long_prompt = " ".join(["the quick dog and the big cat"] * 20)
    batched = judge.preference(["Hi", long_prompt], ["Yes.", "A long answer " * 10], ["No.", "Short."])
    assert batched[0].item() == pytest.approx(alone.item(), abs=1e-5)


def test_generative_judge_rejects_coinciding_choices(tiny_model_dir):
    with pytest.raises(JudgeError, match="same token"):
        GenerativeJudge(tiny_model_dir, choices=("A", "A"))


# ---------------------------------------------------------------- python judges

USER_MODULE = """
def length_reward(prompts, responses):
    return [float(len(r)) for r in responses]

def prefer_longer(prompts, responses_a, responses_b):
    return [0.5 + 0.5 * ((len(a) > len(b)) - (len(a) < len(b))) for a, b in zip(responses_a, responses_b)]

def nan_reward(prompts, responses):
    return [0.0] + [float("nan")] * (len(responses) - 1)

def one_value(prompts, *responses):
    return [0.5]

def out_of_range(prompts, responses_a, responses_b):
    return [2.0 for _ in prompts]

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_judges.py"
    path.write_text(textwrap.dedent(USER_MODULE))
    return str(path)


def test_python_judges_from_file_and_module(user_file, tmp_path, monkeypatch):
    reward = PythonRewardJudge(f"{user_file}:length_reward")
    torch.testing.assert_close(reward.reward(["x", CHAT], ["abc", "hello"]), torch.tensor([3.0, 5.0]).double())
    assert reward.preference(["x"], ["abc"], ["a"]).item() == pytest.approx(sigmoid(2.0))

    (tmp_path / "pkg_prefopt_test_judges").mkdir()
    (tmp_path / "pkg_prefopt_test_judges" / "__init__.py").write_text("")
    (tmp_path / "pkg_prefopt_test_judges" / "scoring.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    pref = PythonPreferenceJudge("pkg_prefopt_test_judges.scoring:prefer_longer")
    got = pref.preference(["x"] * 3, ["abc", "a", "ab"], ["a", "abc", "cd"])
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64))
    import os.path

    assert load_function("os.path:join") is os.path.join


@pytest.mark.parametrize(
    "spec_suffix, match",
    [
        ("no_colon", "must look like"),
        ("no_such_module_for_prefopt_tests:f", "not found"),
        ("{dir}/missing.py:f", "not found"),
        ("{file}:missing", "no attribute 'missing'"),
        ("{file}:NOT_CALLABLE", "not a callable"),
    ],
)
def test_python_judge_bad_specs(user_file, tmp_path, spec_suffix, match):
    spec = spec_suffix.format(dir=tmp_path, file=user_file)
    with pytest.raises(JudgeError, match=match) as info:
        PythonRewardJudge(spec)
    assert spec in str(info.value) and "\n" not in str(info.value)


def test_python_judge_bad_outputs(user_file):
    with pytest.raises(JudgeError, match="row 1"):
        PythonRewardJudge(f"{user_file}:nan_reward").reward(["x", "y"], ["a", "b"])
    with pytest.raises(JudgeError, match=r"one_value' returned 1 values; expected 3"):
        PythonRewardJudge(f"{user_file}:one_value").reward(["x"] * 3, ["a", "b", "c"])
    with pytest.raises(JudgeError, match="one_value' returned 1 values; expected 2"):
        PythonPreferenceJudge(f"{user_file}:one_value").preference(["x"] * 2, ["a", "b"], ["c", "d"])
    with pytest.raises(JudgeError, match="expected a probability"):
        PythonPreferenceJudge(f"{user_file}:out_of_range").preference(["x"], ["a"], ["b"])


# ---------------------------------------------------------------- games and matrix-game judge


def test_games_rock_paper_scissors_and_random_matrices():
    rps = rock_paper_scissors()
    assert rps.dtype == torch.float64
    # Paper (1) beats rock (0), scissors (2) beat paper, rock beats scissors.
    assert rps[1, 0] == 1.0 and rps[2, 1] == 1.0 and rps[0, 2] == 1.0 and rps[0, 1] == 0.0
    check_preference_matrix(rps)

    first, again, other = (
        random_preference_matrix(5, 7),
        random_preference_matrix(5, 7),
        random_preference_matrix(5, 8),
    )
    assert first.shape == (5, 5) and torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(first + first.T, torch.ones(5, 5, dtype=torch.float64))
    assert bool(((first >= 0) & (first <= 1)).all())
    check_preference_matrix(first)


@pytest.mark.parametrize(
    "matrix, match",
    [
        ([[0.5, 0.5]], "square"),
        ([[0.5, 1.5], [-0.5, 0.5]], r"\[0, 1\]"),
        ([[0.5, 0.7], [0.7, 0.5]], "P \\+ P\\^T = 1"),
        ([[0.4, 0.5], [0.5, 0.6]], "P \\+ P\\^T = 1"),
    ],
)
def test_invalid_matrices(matrix, match):
    with pytest.raises(ValueError, match=match):
        check_preference_matrix(matrix)
    with pytest.raises(JudgeError, match=match):
        MatrixGameJudge(matrix)


def test_matrix_game_judge_values_and_actions():
    matrix = [[0.5, 0.9, 0.2], [0.1, 0.5, 0.6], [0.8, 0.4, 0.5]]
    judge = MatrixGameJudge(matrix)
    assert judge.allowed_responses() == ["A", "B", "C"] and judge.matrix.dtype == torch.float64
    assert judge.action_index(" C\n") == 2
    got = judge.preference(["p"] * 4, ["A", " B", "C", "A"], ["B", "C ", "A", "A"])
    torch.testing.assert_close(got, torch.tensor([0.9, 0.6, 0.8, 0.5], dtype=torch.float64))
    with pytest.raises(JudgeError, match=r"'D'.*\['A', 'B', 'C'\]"):
        judge.preference(["p"], ["D"], ["A"])

    named = MatrixGameJudge([[0.5, 0.3], [0.7, 0.5]], actions=["heads", "tails"])
    assert named.preference(["p"], ["tails"], ["heads"]).item() == pytest.approx(0.7)
    with pytest.raises(JudgeError, match="distinct"):
        MatrixGameJudge([[0.5, 0.3], [0.7, 0.5]], actions=["x", "x"])


def test_matrix_game_named_constructors():
    rps = MatrixGameJudge.from_name("rps", None, 0)
    assert torch.equal(rps.matrix, rock_paper_scissors())
    assert rps.preference(["p"], ["B"], ["A"]).item() == 1.0
    assert MatrixGameJudge.from_name("rps", 3, 0).allowed_responses() == ["A", "B", "C"]
    rand = MatrixGameJudge.from_name("random", 4, 11)
    assert torch.equal(rand.matrix, random_preference_matrix(4, 11))
    with pytest.raises(JudgeError, match="3 actions"):
        MatrixGameJudge.from_name("rps", 4, 0)
    with pytest.raises(JudgeError, match="game_size"):
        MatrixGameJudge.from_name("random", None, 0)
    with pytest.raises(JudgeError, match="game_size"):
        MatrixGameJudge.from_name("random", 1, 0)
    with pytest.raises(JudgeError, match="rps, random"):
        MatrixGameJudge.from_name("chess", None, 0)


# ---------------------------------------------------------------- non-transitive judge


def test_nontransitive_hand_value():
    # "Banana": 6 non-whitespace chars, 3 vowels → q = 0.5; 'B' = 66 → c = 66 mod 3 = 0.
    # " sky!": 4 non-whitespace chars, no vowel → q = 0; 's' = 115 → c = 115 mod 3 = 1.
    # P = 0.7·σ(10·0.5) + 0.3·(½ + ½·A[0, 1]) = 0.7·σ(5) + 0.3·(½ − ½) = 0.7·σ(5).
    judge = NonTransitiveJudge()
    assert judge.preference(["ignored"], ["Banana"], [" sky!"]).item() == pytest.approx(0.7 * sigmoid(5.0), abs=1e-12)
    # Empty vs "Eat": q = 0, c = 0 vs q = 2/3, c = 69 mod 3 = 0 → P = 0.7·σ(−20/3) + 0.3·½.
    expected = 0.7 * sigmoid(-20.0 / 3.0) + 0.15
    assert judge.preference([CHAT], ["  "], ["Eat"]).item() == pytest.approx(expected, abs=1e-12)


def test_nontransitive_symmetry_and_cycle():
    judge = NonTransitiveJudge()
    ys = ["Banana", " sky!", "", "Eat more apples", "dog", "zzz", "AEIOU"]
    a = [y for y in ys for _ in ys]
    b = [y for _ in ys for y in ys]
    forward, backward = judge.preference(["x"] * len(a), a, b), judge.preference(["x"] * len(a), b, a)
    torch.testing.assert_close(forward + backward, torch.ones(len(a), dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(judge.preference(["x"] * len(ys), ys, ys), torch.full((len(ys),), 0.5).double())
    # Equal q = 1/3; classes: 'd' 100 → 1, 'c' 99 → 0, 'b' 98 → 2. 1 beats 0, 0 beats 2, 2 beats 1: a cycle.
    cycle = judge.preference(["x"] * 3, ["dog", "cat", "bat"], ["cat", "bat", "dog"])
    torch.testing.assert_close(cycle, torch.full((3,), 0.7 * 0.5 + 0.3, dtype=torch.float64))


# ---------------------------------------------------------------- factory


def test_build_judge_every_kind(tiny_model_dir, tiny_reward_dir, user_file, tmp_path):
    from api_replay import ReplayServer, with_logprobs

    from prefopt.judges.api import ApiOptions

    server = ReplayServer(lambda body: with_logprobs({"m": -0.5, "M": -1.0})).__enter__()
    api = ApiOptions(server.url, "judge", api_key_env=None, cache_path=str(tmp_path / "cache.sqlite"))
    from prefopt.tiny_pairrm import build_tiny_pairrm

    built = {
        "openai": build_judge("openai", api=api),
        "pairrm": build_judge("pairrm", model_name_or_path=str(build_tiny_pairrm(tmp_path / "pairrm"))),
        "nontransitive": build_judge("nontransitive"),
        "matrix_game": build_judge("matrix_game", game="rps"),
        "reward_model": build_judge("reward_model", model_name_or_path=tiny_reward_dir, batch_size=4),
        "pairwise_model": build_judge("pairwise_model", model_name_or_path=tiny_reward_dir),
        "generative": build_judge("generative", model_name_or_path=tiny_model_dir, max_length=64),
        "python_reward": build_judge("python_reward", function=f"{user_file}:length_reward"),
        "python_preference": build_judge("python_preference", function=f"{user_file}:prefer_longer"),
        "exact_match": build_judge("exact_match"),
        "math": build_judge("math"),
    }
    assert set(built) == set(JUDGE_KINDS)
    assert isinstance(built["reward_model"], RewardModelJudge) and built["reward_model"].batch_size == 4
    assert isinstance(built["generative"], GenerativeJudge) and built["generative"].max_length == 64
    for kind, judge in built.items():
        ys = ["A", "B"] if kind == "matrix_game" else ["Hello there.", "Bye."]
        references = ["Hello there."] if judge.needs_references else None
        p = judge.preference(["Hi"], ys[:1], ys[1:], references)
        assert 0.0 <= p.item() <= 1.0, kind
    server.__exit__()

    matrix = build_judge("matrix_game", game_matrix=[[0.5, 0.3], [0.7, 0.5]], game_actions=["x", "y"])
    assert matrix.allowed_responses() == ["x", "y"]
    assert build_judge("matrix_game", game="random", game_size=3, game_seed=5).matrix.shape == (3, 3)


@pytest.mark.parametrize(
    "kind, options, match",
    [
        ("oracle", {}, "valid kinds: nontransitive, matrix_game"),
        ("reward_model", {}, "model_name_or_path"),
        ("pairwise_model", {}, "model_name_or_path"),
        ("generative", {}, "model_name_or_path"),
        ("python_reward", {}, "function"),
        ("python_preference", {}, "function"),
        ("openai", {}, "judge_base_url and judge_model"),
        ("pairrm", {}, "model_name_or_path"),
        ("matrix_game", {}, "game_matrix"),
        ("matrix_game", {"game": "random"}, "game_size"),
    ],
)
def test_build_judge_errors(kind, options, match):
    with pytest.raises(JudgeError, match=match) as info:
        build_judge(kind, **options)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- reference answers


def test_rule_judges_check_against_references():
    exact, math_judge = build_judge("exact_match"), build_judge("math")
    rewards = exact.reward(["1+1"] * 3, [" 2 ", "3", "2."], ["2", "2", "2"])
    assert rewards.tolist() == [1.0, 0.0, 0.0]
    assert math_judge.reward(["q"] * 2, [r"so \boxed{\frac{1}{2}}", "The answer is 3."], ["0.5", "4"]).tolist() == [
        1.0,
        0.0,
    ]
    # Through the Bradley-Terry view and per-prompt groups, the references follow their rows.
    assert exact.preference(["a", "b"], ["2", "x"], ["x", "5"], ["2", "5"]).tolist() == pytest.approx(
        [torch.sigmoid(torch.tensor(1.0)).item(), torch.sigmoid(torch.tensor(-1.0)).item()]
    )
    groups = exact.grouped_rewards(["a", "b"], [["1", "2"], ["3"]], ["2", "3"])
    assert [g.tolist() for g in groups] == [[0.0, 1.0], [1.0]]
    with pytest.raises(JudgeError, match="answer_column"):
        exact.reward(["a"], ["1"])


def test_python_reward_receives_references_when_it_takes_them(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text(
        "def checked(prompts, responses, references):\n"
        "    return [float(r == a) for r, a in zip(responses, references)]\n"
        "def optional(prompts, responses, references=None):\n"
        "    return [0.5 if references is None else 1.0 for _ in responses]\n"
    )
    checked = build_judge("python_reward", function=f"{path}:checked")
    assert checked.needs_references and checked.reward(["q"], ["7"], ["7"]).tolist() == [1.0]
    optional = build_judge("python_reward", function=f"{path}:optional")
    assert not optional.needs_references
    assert optional.reward(["q"], ["7"]).tolist() == [0.5] and optional.reward(["q"], ["7"], ["x"]).tolist() == [1.0]

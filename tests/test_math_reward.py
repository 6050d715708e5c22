"""Math rule reward against answers worked out by hand: extraction, normalization, exact and tolerant matching."""

from fractions import Fraction

import pytest

from prefopt.rewards.math import answers_match, extract_answer, math_reward, normalize_answer, parse_number


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"So $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),  # nested braces kept whole
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not count as grouping
        (r"\fbox{7}", "7"),
        (r"hence \boxed 5$.", "5"),  # brace-less form
        (r"First \boxed{3}, but wait: \boxed{4}", "4"),  # the last box counts
        ("The answer is 42.", "42"),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 18", "18"),
        ("**Answer:** 7", "7"),
        ("The answer is 3.\nNo, the answer is 3.5.\nThanks", "3.5"),  # last marker, to end of its line
        (r"\boxed{3", None),  # truncated box: no answer, no crash
        (r"\boxed{}", None),
        ("", None),
        ("I counted 3 cats and 1,234 dogs.", None),  # no last-number fallback by default
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_extract_answer_last_number_fallback_is_opt_in():
    assert extract_answer("I counted 3 cats and 1,234 dogs.", fallback_last_number=True) == "1,234"
    assert extract_answer("no digits here", fallback_last_number=True) is None
    # A marker or box still wins over the fallback.
    assert extract_answer(r"2 and 3, so \boxed{5}", fallback_last_number=True) == "5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"$\left( 1,\! 2 \right)$", "(1,2)"),
        (r"\$1,234.", "1234"),  # thousands separators leave a lone number...
        ("(1,234)", "(1,234)"),  # ...but not a tuple
        (r"\theta = 30^{\circ}", "30"),
        ("x = y = 5", "x=y=5"),  # not a single assignment: kept
        (r"\tfrac{1}{2}\text{ m}", r"\frac{1}{2}m"),
        (r"x\rightarrow\infty", r"x\rightarrow\infty"),  # \right removal does not eat \rightarrow
        (r"50\%", "50%"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-3.25", Fraction(-13, 4)),
        (".5", Fraction(1, 2)),
        ("3/4", Fraction(3, 4)),
        (r"\frac{3}{4}", Fraction(3, 4)),
        (r"\frac34", Fraction(3, 4)),
        (r"-\frac{1}{2}", Fraction(-1, 2)),
        (r"1\frac{1}{2}", Fraction(3, 2)),
        (r"50\%", Fraction(50)),
        ("1e-3", Fraction(1, 1000)),
        ("$1,234$", Fraction(1234)),
        ("0.1+0.2", None),  # expressions are not evaluated
        (r"\sqrt{2}", None),
        ("abc", None),
        ("", None),
        ("1/0", None),
        ("1e999999999", None),  # refused rather than building a billion-digit integer
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        (r"\frac{1}{2}", "0.5"),
        ("1,234", "1234"),
        ("(1, 2)", "(1,2)"),
        (r"90^\circ", "90"),
        (r"\text{5 cm}", "5 cm"),
        (r"-\frac{3}{4}", "-0.75"),
        ("x = 5", "5"),
        (r"50\%", "0.5"),  # percent against a fraction...
        (r"50\%", "50"),  # ...and against the bare number
        (r"\dfrac{3}{4}", "3/4"),
        (r"1\frac{1}{2}", "1.5"),
        ("1e-3", "0.001"),
        ("1/3", "0.3333333"),  # |1/3 - 0.3333333| / (1/3) = 1e-7 <= 1e-6
        ("[1, 2)", r"\left[1,2\right)"),
        (r"\{1,2\}", r"\{1, 2\}"),
        ("1, 2, 3", "1,2,3"),
        (r"(0.5, \frac{1}{3})", r"(\frac12, 1/3)"),  # element by element, numerically
    ],
)
def test_answers_match(prediction, reference):
    assert answers_match(prediction, reference)
    assert answers_match(reference, prediction)


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("1/3", "0.333"),  # relative error 1e-3
        ("0.1+0.2", "0.3"),  # not evaluated
        ("1000000", "1000001"),  # integers compare exactly: no tolerance (relative gap ~1e-6)
        (r"\sqrt{4}", "2"),
        ("(1,2)", "[1,2]"),  # open vs closed interval
        ("(1,2)", "(2,1)"),  # order matters
        ("1,2,3", "3,2,1"),
        ("(1,2)", "(1,2,3)"),
        (r"\text{5 cm}", "5"),  # units are not stripped
        (r"50\%", "5"),
        ("", "0"),
        (r"\frac{1}{0}", "0"),
    ],
)
def test_answers_do_not_match(prediction, reference):
    assert not answers_match(prediction, reference)
    assert not answers_match(reference, prediction)


def test_rel_tol_is_relative_and_configurable():
    # 1/3 vs 0.333: relative gap exactly 1e-3 (0.001/3 over 1/3).
    assert not answers_match("1/3", "0.333", rel_tol=1e-4)
    assert answers_match("1/3", "0.333", rel_tol=2e-3)
    # Large values: 123456.7 vs 123456.8 differ by 0.1, relative ~8.1e-7.
    assert answers_match("123456.7", "123456.8")
    assert not answers_match("123456.7", "123456.8", rel_tol=1e-7)


def test_math_reward_batch():
    responses = [
        r"So $\boxed{\frac{1}{2}}$.",
        "Total: #### 18",
        "The answer is 41.",
        "",
        r"\boxed{3",
        r"First \boxed{2}, but wait: $\boxed{(1, 2)}$",
        r"\boxed{1,234}",
        r"\boxed{-\frac{3}{4}}",
        "I think it is 7.",  # no marker, no box: 0 even though 7 is right
    ]
    references = ["0.5", "18", "42", "0", "3", r"$\boxed{(1,2)}$", "1234", "-0.75", "7"]
    prompts = [f"q{i}" for i in range(len(responses))]
    assert math_reward(prompts, responses, references) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]


def test_math_reward_reference_forms():
    # A boxed reference is extracted; a raw GSM8K solution is read from its #### line.
    gsm8k = "Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72.\n#### 72"
    responses = ["The answer is 72.", r"\boxed{10}", r"\boxed{10}"]
    references = [gsm8k, r"The area is $\boxed{10}$.", r"The area is $\boxed{12}$."]
    assert math_reward([None] * 3, responses, references) == [1.0, 1.0, 0.0]


def test_math_reward_length_mismatch():
    with pytest.raises(ValueError, match="2 prompts, 1 responses and 2 references"):
        math_reward(["a", "b"], ["x"], ["1", "2"])

"""prefopt.data: every source format, row-level validation errors, chat-template round trips, prompt splits."""

import json
import logging
from pathlib import Path

import datasets
import pytest

from prefopt.data import (
    encode_prompt,
    encode_response,
    holdout_split,
    iteration_prompts,
    load_dataset_source,
    load_preferences,
    load_prompts,
)
from prefopt.errors import DataError

datasets.disable_progress_bars()

ROWS = [
    {"prompt": "Tell me about the moon.", "answer": "bright"},
    {"prompt": "Write a short poem about rivers.", "answer": "flow"},
    {"prompt": "What is a star?", "answer": "sun"},
]
CHAT_ROWS = [
    {"prompt": [{"role": "user", "content": "Tell me about the moon."}], "answer": "bright"},
    {"prompt": [{"role": "user", "content": "Write a short poem about rivers."}], "answer": "flow"},
]


def write_rows(path: Path, rows: list[dict]) -> str:
    """Write rows in the format the suffix names; a folder path means save_to_disk."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif path.suffix == ".csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return str(path)


def save_dict(path: Path, **splits: list[dict]) -> str:
    datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(
        str(path)
    )
    return str(path)


def as_tuples(examples):
    return [(ex.index, ex.prompt, ex.prompt_ids, ex.extra) for ex in examples]


# --- sources -------------------------------------------------------------------------------------------------


def test_every_format_loads_the_same_standard_prompts(tmp_path, tokenizer):
    sources = [write_rows(tmp_path / f"p{suffix}", ROWS) for suffix in (".json", ".jsonl", ".parquet", ".csv")]
    sources.append(write_rows(tmp_path / "saved", ROWS))
    sources.append(save_dict(tmp_path / "saved_dict", train=ROWS, test=ROWS[:1]))
    loaded = [as_tuples(load_prompts(source, tokenizer)) for source in sources]
    assert len(loaded[0]) == 3
    assert loaded[0][1][1] == "Write a short poem about rivers."
    assert loaded[0][1][3] == {"answer": "flow"}
    for other in loaded[1:]:
        assert other == loaded[0]


def test_conversational_formats_load_the_same_messages(tmp_path, tokenizer):
    sources = [write_rows(tmp_path / f"c{suffix}", CHAT_ROWS) for suffix in (".json", ".jsonl", ".parquet")]
    sources.append(write_rows(tmp_path / "saved", CHAT_ROWS))
    loaded = [as_tuples(load_prompts(source, tokenizer)) for source in sources]
    assert loaded[0][0][1] == CHAT_ROWS[0]["prompt"]
    assert loaded[0][0][2] == encode_prompt(tokenizer, CHAT_ROWS[0]["prompt"])
    for other in loaded[1:]:
        assert other == loaded[0]


def test_dataset_dict_split_is_picked(tmp_path, tokenizer):
    source = save_dict(tmp_path / "dd", train=ROWS, test=ROWS[2:])
    examples = load_prompts(source, tokenizer, split="test")
    assert [ex.prompt for ex in examples] == ["What is a star?"]


def test_missing_split_lists_available(tmp_path):
    source = save_dict(tmp_path / "dd", train=ROWS, test=ROWS)
    with pytest.raises(DataError, match=r"has no split 'validation'; available splits: train, test"):
        load_dataset_source(source, split="validation")


def test_missing_split_of_a_file_names_the_one_split(tmp_path):
    source = write_rows(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(DataError) as info:
        load_dataset_source(source, split="test")
    message = str(info.value)
    assert source in message and "'train'" in message and "\n" not in message


def test_nonexistent_file(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=f"dataset file '{missing}' does not exist"):
        load_dataset_source(missing)
    with pytest.raises(DataError, match="dataset file 'data/nope.parquet' does not exist"):
        load_dataset_source("data/nope.parquet")


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.json", "empty.csv", "empty.parquet", "saved", "saved_dict"])
def test_empty_dataset(tmp_path, name):
    path = tmp_path / name
    empty = datasets.Dataset.from_dict({"prompt": []})
    if name == "empty.json":
        path.write_text("[]")
    elif name == "empty.csv":
        path.write_text("prompt\n")
    elif name == "empty.parquet":
        empty.to_parquet(str(path))
    elif name == "saved":
        empty.save_to_disk(str(path))
    elif name == "saved_dict":
        datasets.DatasetDict(train=empty).save_to_disk(str(path))
    else:
        path.write_text("")
    with pytest.raises(DataError, match=rf"dataset '{path}' \(split train\) has no rows"):
        load_dataset_source(str(path))


def test_unparseable_file_is_one_line_naming_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(DataError) as info:
        load_dataset_source(str(path))
    assert str(info.value).startswith(f"{path}: line 2: invalid JSON: ") and "\n" not in str(info.value)


def test_hub_name_offline_is_a_data_error():
    # conftest sets HF_DATASETS_OFFLINE, so this fails at once without touching the network.
    with pytest.raises(DataError, match="cannot load dataset 'no-such-user/no-such-dataset'"):
        load_dataset_source("no-such-user/no-such-dataset")


# --- encoding ------------------------------------------------------------------------------------------------


def test_conversational_round_trip_has_one_bos_and_ends_at_eos(tokenizer):
    messages = [{"role": "user", "content": "Tell me about the moon."}]
    response = "It is bright."
    prompt_ids = encode_prompt(tokenizer, messages)
    response_ids = encode_response(tokenizer, messages, response)
    full_text = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": response}], add_generation_prompt=False, tokenize=False
    )
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]

    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert response_ids[-1] == tokenizer.eos_token_id
    assert response_ids.count(tokenizer.eos_token_id) == 1
    ids = prompt_ids + response_ids
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    decoded = tokenizer.decode(ids, skip_special_tokens=False)
    # The template adds "\n" after the assistant's EOS; the policy stops at EOS, so the encoding does too.
    assert decoded == full_text[: full_text.rindex(tokenizer.eos_token) + len(tokenizer.eos_token)]
    assert decoded.endswith("It is bright.</s>")


def test_multi_turn_prompt_round_trip(tokenizer):
    messages = [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hello, world."},
        {"role": "user", "content": "Tell me a story."},
    ]
    ids = encode_prompt(tokenizer, messages) + encode_response(tokenizer, messages, "Once upon a time.")
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids, skip_special_tokens=False).endswith("<|assistant|>\nOnce upon a time.</s>")


def test_standard_prompt_uses_no_template(tokenizer):
    prompt = "Tell me about the moon."
    assert encode_prompt(tokenizer, prompt) == tokenizer(prompt)["input_ids"]
    response_ids = encode_response(tokenizer, prompt, " It is bright.")
    expected = tokenizer(" It is bright.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert response_ids == expected
    decoded = tokenizer.decode(encode_prompt(tokenizer, prompt) + response_ids, skip_special_tokens=False)
    assert decoded == "Tell me about the moon. It is bright.</s>"


def test_conversational_prompt_needs_a_chat_template(tokenizer):
    no_template = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    no_template.chat_template = None
    with pytest.raises(DataError, match="chat_template"):
        encode_prompt(no_template, [{"role": "user", "content": "hi"}])
    assert encode_prompt(no_template, "hi") == tokenizer("hi")["input_ids"]


def test_template_that_is_not_prefix_stable(tokenizer):
    unstable = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # The generation prompt says "<|assistant|>\n" but the rendered assistant turn has no newline after it.
    unstable.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{% if m['role'] != 'assistant' %}\n{% endif %}"
        "{{ m['content'] }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    with pytest.raises(DataError, match="not prefix-stable"):
        encode_response(unstable, [{"role": "user", "content": "hi"}], "there")


# --- prompt validation ---------------------------------------------------------------------------------------


def rows_file(tmp_path, rows, name="data.jsonl") -> str:
    return write_rows(tmp_path / name, rows)


def test_missing_prompt_column_lists_present(tmp_path, tokenizer):
    source = rows_file(tmp_path, [{"question": "a", "answer": "b"}])
    with pytest.raises(DataError, match=rf"{source}: missing column 'prompt'; columns present: question, answer"):
        load_prompts(source, tokenizer)
    assert load_prompts(source, tokenizer, prompt_column="question")[0].extra == {"answer": "b"}


def test_missing_required_column(tmp_path, tokenizer):
    source = rows_file(tmp_path, [{"prompt": "a", "chosen": "b"}])
    with pytest.raises(DataError, match=r"missing column 'rejected'; columns present: prompt, chosen"):
        load_prompts(source, tokenizer, require_columns=("chosen", "rejected"))


@pytest.mark.parametrize(
    "bad_row, problem",
    [
        ({"prompt": "   "}, "column 'prompt' is empty"),
        ({"prompt": None}, "column 'prompt' is null"),
        ({"prompt": []}, "column 'prompt' is an empty message list"),
        ({"prompt": [{"role": "user", "content": None}]}, "column 'prompt' message 0 has no string 'content'"),
        ({"prompt": [{"role": None, "content": "x"}]}, "column 'prompt' message 0 has no string 'role'"),
        (
            {"prompt": [{"role": "wizard", "content": "x"}]},
            "column 'prompt' message 0 has role 'wizard'; roles allowed: system, developer, user, assistant, tool",
        ),
    ],
)
def test_bad_conversational_rows(tmp_path, tokenizer, bad_row, problem):
    good = {"prompt": [{"role": "user", "content": "hi"}]}
    # Rows of one JSON column share a type, so the string cases go in a file of their own.
    rows = [{"prompt": "ok"}] * 3 + [bad_row] if isinstance(bad_row["prompt"], str) else [good] * 3 + [bad_row]
    source = rows_file(tmp_path, rows)
    with pytest.raises(DataError) as info:
        load_prompts(source, tokenizer)
    assert str(info.value) == f"{source}: line 4: {problem}"


@pytest.mark.parametrize(
    "value, type_name", [(5, "int"), (["just", "strings"], "message 0 must be a {'role', 'content'} dict, got str")]
)
def test_wrong_prompt_type(tmp_path, tokenizer, value, type_name):
    source = rows_file(tmp_path, [{"prompt": value}, {"prompt": value}])
    with pytest.raises(DataError, match=rf"^{source}: line 1: column 'prompt' ") as info:
        load_prompts(source, tokenizer)
    assert type_name in str(info.value)


def test_too_long_prompt_with_error_mode(tmp_path, tokenizer):
    long_prompt = "Tell me about the moon. " * 20
    source = rows_file(tmp_path, [{"prompt": "short"}, {"prompt": long_prompt}])
    length = len(encode_prompt(tokenizer, long_prompt))
    with pytest.raises(DataError) as info:
        load_prompts(source, tokenizer, max_prompt_length=16, truncation_mode="error")
    assert str(info.value) == f"{source}: line 2: prompt has {length} tokens, more than max_prompt_length=16"


def test_keep_end_truncation_keeps_the_last_tokens(tmp_path, tokenizer, caplog):
    messages = [{"role": "user", "content": "Tell me about the moon. " * 20}]
    source = rows_file(tmp_path, [{"prompt": messages}, {"prompt": [{"role": "user", "content": "hi"}]}])
    full_ids = encode_prompt(tokenizer, messages)
    with caplog.at_level(logging.INFO, logger="prefopt.data"):
        examples = load_prompts(source, tokenizer, max_prompt_length=16)
    assert examples[0].prompt_ids == full_ids[-16:]
    assert examples[0].prompt == messages
    assert examples[1].prompt_ids == encode_prompt(tokenizer, [{"role": "user", "content": "hi"}])
    assert "1 prompts cut to their last 16 tokens" in caplog.text


def test_unknown_truncation_mode(tmp_path, tokenizer):
    with pytest.raises(DataError, match="truncation_mode must be one of keep_end, error; got 'keep_start'"):
        load_prompts(rows_file(tmp_path, ROWS), tokenizer, truncation_mode="keep_start")


def test_quickstart_prompts_file_is_valid(tokenizer):
    source = Path(__file__).resolve().parent.parent / "configs" / "data" / "quickstart_prompts.jsonl"
    examples = load_prompts(str(source), tokenizer, max_prompt_length=64, truncation_mode="error")
    assert len(examples) == 240
    assert len({ex.prompt[0]["content"] for ex in examples}) == 240
    assert all(len(ex.prompt[0]["content"].split()) < 20 for ex in examples)


# --- preferences ---------------------------------------------------------------------------------------------


def test_explicit_preferences_strings_and_messages(tmp_path, tokenizer):
    user = [{"role": "user", "content": "Tell me about the moon."}]
    string_source = rows_file(
        tmp_path, [{"prompt": user, "chosen": "It is bright.", "rejected": "No."}], name="strings.jsonl"
    )
    message_source = rows_file(
        tmp_path,
        [
            {
                "prompt": user,
                "chosen": [{"role": "assistant", "content": "It is bright."}],
                "rejected": [{"role": "assistant", "content": "No."}],
            }
        ],
        name="messages.parquet",
    )
    for source in (string_source, message_source):
        (example,) = load_preferences(source, tokenizer)
        assert (example.prompt, example.chosen, example.rejected) == (user, "It is bright.", "No.")
        assert example.prompt_ids == encode_prompt(tokenizer, user)
        assert example.chosen_ids == encode_response(tokenizer, user, "It is bright.")
        assert example.rejected_ids[-1] == tokenizer.eos_token_id


def test_completion_end_template_gives_the_tokens_of_trls_dpo_trainer(tmp_path, tokenizer):
    """TRL's DPOTrainer tokenises a conversational completion as everything the chat template renders after the
    prompt (here the newline after </s>); prefopt ends it at the end-of-turn token, which is what the policy
    generates. completion_end: template gives TRL's tokens exactly (its own tokenisation steps, called here)."""
    from trl.data_utils import _tokenize
    from trl.trainer.dpo_trainer import common_prefix_length

    user = [{"role": "user", "content": "Tell me about the moon."}]
    chosen, rejected = [{"role": "assistant", "content": "It is bright."}], [{"role": "assistant", "content": "No."}]
    source = rows_file(tmp_path, [{"prompt": user, "chosen": chosen, "rejected": rejected}])
    (ours,) = load_preferences(source, tokenizer, completion_end="template")
    prompt_ids = _tokenize(tokenizer, user, add_generation_prompt=True)["input_ids"]
    for completion, ids in ((chosen, ours.chosen_ids), (rejected, ours.rejected_ids)):
        full = _tokenize(tokenizer, user + completion)["input_ids"]
        start = common_prefix_length(prompt_ids, full)
        assert (ours.prompt_ids, ids) == (prompt_ids[:start], full[start:])
    (default,) = load_preferences(source, tokenizer)
    assert default.chosen_ids == ours.chosen_ids[:-1] and default.chosen_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ours.chosen_ids[-1:]) == "\n"


def test_implicit_preferences_share_the_prompt(tmp_path, tokenizer):
    prompt = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."}]
    prompt += [{"role": "user", "content": "Tell me about the moon."}]
    row = {
        "chosen": [*prompt, {"role": "assistant", "content": "It is bright."}],
        "rejected": [*prompt, {"role": "assistant", "content": "No."}],
    }
    (example,) = load_preferences(rows_file(tmp_path, [row]), tokenizer)
    assert example.prompt == prompt
    assert (example.chosen, example.rejected) == ("It is bright.", "No.")
    assert example.prompt_ids == encode_prompt(tokenizer, prompt)


def test_implicit_preferences_bad_prefix(tmp_path, tokenizer):
    row = {
        "chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "yes"}],
        "rejected": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "no"}],
    }
    source = rows_file(tmp_path, [row])
    with pytest.raises(DataError, match=rf"^{source}: line 1: chosen and rejected do not share a prompt"):
        load_preferences(source, tokenizer)


def test_implicit_preferences_last_message_must_be_assistant(tmp_path, tokenizer):
    row = {
        "chosen": [{"role": "user", "content": "A?"}, {"role": "user", "content": "yes"}],
        "rejected": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "no"}],
    }
    source = rows_file(tmp_path, [row])
    with pytest.raises(DataError, match=rf"^{source}: line 1: column 'chosen' must end with an assistant message"):
        load_preferences(source, tokenizer)


def test_empty_chosen_or_rejected(tmp_path, tokenizer):
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b"}, {"prompt": "Q", "chosen": "a", "rejected": " "}]
    source = rows_file(tmp_path, rows)
    with pytest.raises(DataError, match=rf"^{source}: line 2: column 'rejected' is empty$"):
        load_preferences(source, tokenizer)
    source = rows_file(tmp_path, [{"prompt": "Q", "rejected": "b"}], name="nochosen.jsonl")
    with pytest.raises(DataError, match=r"missing column 'chosen'; columns present: prompt, rejected"):
        load_preferences(source, tokenizer)


# --- iteration splits and holdout ----------------------------------------------------------------------------


def test_disjoint_parts_cover_everything():
    parts = [iteration_prompts(103, None, t, 4, seed=7) for t in range(4)]
    flat = [i for part in parts for i in part]
    assert sorted(flat) == list(range(103))
    assert sorted(len(part) for part in parts) == [25, 26, 26, 26]
    assert parts[1] == iteration_prompts(103, None, 1, 4, seed=7)
    assert flat != list(range(103))


def test_fixed_size_blocks_are_disjoint_within_a_pass():
    blocks = [iteration_prompts(10, 5, t, 6, seed=3) for t in range(6)]
    passes = [blocks[0] + blocks[1], blocks[2] + blocks[3], blocks[4] + blocks[5]]
    for used in passes:
        assert sorted(used) == list(range(10))
    assert passes[0] != passes[1]
    assert blocks == [iteration_prompts(10, 5, t, 6, seed=3) for t in range(6)]
    # A block size that does not divide the data still uses each prompt once per pass.
    stream = [i for t in range(5) for i in iteration_prompts(10, 4, t, 5, seed=3)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))


def test_different_seeds_differ():
    assert iteration_prompts(50, None, 0, 2, seed=0) != iteration_prompts(50, None, 0, 2, seed=1)
    assert iteration_prompts(50, 10, 0, 2, seed=0) != iteration_prompts(50, 10, 0, 2, seed=1)


def test_too_few_prompts_for_disjoint_parts():
    with pytest.raises(DataError, match="cannot split 3 prompts into 4"):
        iteration_prompts(3, None, 0, 4, seed=0)


def test_holdout_split():
    examples = list(range(20))
    train, evaluation = holdout_split(examples, 5, seed=0)
    assert len(train) == 15 and len(evaluation) == 5
    assert sorted(train + evaluation) == examples
    assert (train, evaluation) == holdout_split(examples, 5, seed=0)
    assert evaluation != holdout_split(examples, 5, seed=1)[1]
    assert holdout_split(examples, 0, seed=0) == (examples, [])
    with pytest.raises(DataError, match="cannot hold out 20 of 20"):
        holdout_split(examples, 20, seed=0)


def test_h4_ultrafeedback_shape_prompt_string_beside_whole_conversations(tmp_path, tokenizer):
    """HuggingFaceH4/ultrafeedback_binarized: a 'prompt' string and chosen/rejected as full conversations."""
    row = {
        "prompt": "Name a colour.",
        "chosen": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "No."}],
    }
    path = tmp_path / "h4.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (example,) = load_preferences(str(path), tokenizer)
    assert example.prompt == [{"role": "user", "content": "Name a colour."}]
    assert (example.chosen, example.rejected) == ("Blue.", "No.")
    assert example.chosen_ids == encode_response(tokenizer, example.prompt, "Blue.")


def test_text_prompts_as_chat_applies_the_template(tmp_path, tokenizer):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"prompt": "Tell me about rivers."}) + "\n")
    (raw,) = load_prompts(str(path), tokenizer)
    (chat,) = load_prompts(str(path), tokenizer, text_prompts_as_chat=True)
    assert raw.prompt == "Tell me about rivers." and raw.prompt_ids == tokenizer("Tell me about rivers.")["input_ids"]
    assert chat.prompt == [{"role": "user", "content": "Tell me about rivers."}]
    assert chat.prompt_ids == encode_prompt(tokenizer, chat.prompt)
    assert tokenizer.decode(chat.prompt_ids).startswith("<s><|user|>")


def test_a_file_that_is_not_utf8_is_named_with_its_line_and_offset(tmp_path, tokenizer):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "ok"}\n{"prompt": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_prompts(str(path), tokenizer)
    # Line 2 starts at byte 17, and its first 15 bytes are '{"prompt": "caf': the é (0xe9 in latin-1) is byte 32.
    assert str(info.value) == f"{path}: line 2: not UTF-8 (byte 0xe9 at offset 32); save it as UTF-8"


def test_a_malformed_json_line_is_named_with_the_parsers_reason(tmp_path, tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n{"prompt": "c",}\n')
    with pytest.raises(DataError) as info:
        load_prompts(str(path), tokenizer)
    assert str(info.value) == (
        f"{path}: line 4: invalid JSON: Expecting property name enclosed in double quotes (column 16)"
    )
    path.write_text('{"prompt": "a"}\n["not", "an", "object"]\n')
    with pytest.raises(DataError, match="line 2: expected one JSON object per line, got list$"):
        load_prompts(str(path), tokenizer)


def test_rows_are_named_by_their_line_in_json_lines_and_by_index_elsewhere(tmp_path, tokenizer):
    rows = [{"prompt": "a"}, {"prompt": "b"}, {"prompt": " "}]
    path = tmp_path / "blank_lines.jsonl"  # a blank line between rows: row 2 is on line 4
    path.write_text('{"prompt": "a"}\n{"prompt": "b"}\n\n{"prompt": " "}\n')
    with pytest.raises(DataError, match=rf"^{path}: line 4: column 'prompt' is empty$"):
        load_prompts(str(path), tokenizer)
    for name in ("rows.json", "rows.parquet"):  # (CSV drops a blank row)
        source = write_rows(tmp_path / name, rows)
        with pytest.raises(DataError, match=rf"^{source}: row 2 \(counting from 0\): column 'prompt' is empty$"):
            load_prompts(source, tokenizer)

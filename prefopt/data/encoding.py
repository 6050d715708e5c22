"""Prompts and responses to token ids: the chat template is applied here and only here."""

from __future__ import annotations

from typing import Any

from prefopt.errors import DataError, first_line
from prefopt.judges.base import Prompt

# The roles of TRL's conversational format (and of OpenAI's chat API); a chat template renders any string it is given,
# so a misspelt role would otherwise train silently on a turn the model never sees in use.
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")


def prompt_problem(value: Any, column: str) -> str | None:
    """What is wrong with a prompt-like value (a string or a list of messages), or None when it is valid."""
    if value is None:
        return f"column '{column}' is null"
    if isinstance(value, str):
        return f"column '{column}' is empty" if not value.strip() else None
    if not isinstance(value, list):
        return f"column '{column}' must be a string or a list of messages, got {type(value).__name__}"
    if not value:
        return f"column '{column}' is an empty message list"
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            return f"column '{column}' message {i} must be a {{'role', 'content'}} dict, got {type(message).__name__}"
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                return f"column '{column}' message {i} has no string '{key}'"
        if message["role"] not in CHAT_ROLES:
            return (
                f"column '{column}' message {i} has role {message['role']!r}; roles allowed: {', '.join(CHAT_ROLES)}"
            )
    return None


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("conversational prompts need a tokenizer with a chat_template, and this one has none")
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    except Exception as err:  # jinja raises its own errors for conversations a template rejects
        raise DataError(f"the chat template rejected the conversation: {first_line(err)}") from err


def as_chat(prompt: Prompt) -> Prompt:
    """A string prompt as one user message; a conversation unchanged."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt, ready for generation (TRL semantics).

    A conversational prompt is rendered with the chat template and the generation prompt, then tokenized
    without special tokens (the template holds the BOS). A string prompt is tokenized with the tokenizer's own
    special tokens and no template.

    Returns:
        token ids [L].
    """
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    if not isinstance(prompt, list):
        raise DataError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")
    text = _render(tokenizer, prompt, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_response(tokenizer, prompt: Prompt, response: str, completion_end: str = "eos") -> list[int]:
    """Token ids of ``response`` as the policy emits them after ``encode_prompt(prompt)``, ending with EOS.

    Conversational: the template of prompt + assistant message, minus the prompt's ids, cut right after the
    first EOS (templates often add a newline after it, which the policy never generates). If the template
    emits no EOS, one is appended: a response must end with EOS for generation to stop. ``completion_end =
    "template"`` keeps everything the template renders after the prompt instead (ChatML's newline after
    ``<|im_end|>`` included), as TRL's DPOTrainer tokenises a conversational completion.

    Returns:
        token ids [T], the last one ``tokenizer.eos_token_id`` (with ``template``: the template's last token).

    Raises:
        DataError: no EOS token, or a chat template whose prompt rendering is not a token prefix of the
            full conversation.
    """
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise DataError("the tokenizer has no eos_token; responses need one to end")
    if isinstance(prompt, str):
        return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [eos_id]
    prompt_ids = encode_prompt(tokenizer, prompt)
    text = _render(tokenizer, [*prompt, {"role": "assistant", "content": response}], add_generation_prompt=False)
    full_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise DataError(
            "the chat template is not prefix-stable: the prompt rendered with add_generation_prompt=True does not "
            "tokenize to a prefix of the prompt + assistant response, so responses cannot be split off"
        )
    response_ids = full_ids[len(prompt_ids) :]
    if completion_end == "template" and response_ids:
        return response_ids
    if eos_id in response_ids:
        return response_ids[: response_ids.index(eos_id) + 1]
    return response_ids + [eos_id]

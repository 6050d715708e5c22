"""User-facing errors.

Every problem a user can fix (bad config, bad data, a missing model, a judge that returns NaN) is raised as a
:class:`PrefoptError`. The CLI prints its message on one line and exits with status 2; anything else is a bug
and keeps its traceback.
"""


class PrefoptError(Exception):
    """An error in the user's input: printed as one line, exit status 2."""


class ConfigError(PrefoptError):
    """A config field is unknown, missing, of the wrong type or out of range."""


class DataError(PrefoptError):
    """A dataset file, column or row is missing or malformed."""


class ModelError(PrefoptError):
    """A model or tokenizer cannot be found or loaded."""


class JudgeError(PrefoptError):
    """A judge is misconfigured or returned an invalid value (NaN, out of range)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): what a one-line error quotes."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

"""User-facing errors.

Every problem a user can fix (bad config, bad data, a missing model, a judge that returns NaN, a folder that cannot
be written) is raised as a :class:`PrefoptError`. The CLI prints its message on one line and exits with status 2, as
it does for the :func:`storage_errors` (the file system refused a read or write); anything else is a bug and keeps
its traceback.
"""


class PrefoptError(Exception):
    """An error in the user's input: printed as one line, exit status 2."""


class ConfigError(PrefoptError):
    """A config field is unknown, missing, of the wrong type or out of range."""


class DataError(PrefoptError):
    """A dataset file, column or row is missing or malformed."""


class ModelError(PrefoptError):
    """A model or tokenizer cannot be found or loaded."""


class StorageError(PrefoptError):
    """A file or folder cannot be written or read back: permissions, a full disk, a truncated checkpoint."""


class JudgeError(PrefoptError):
    """A judge is misconfigured or returned an invalid value (NaN, out of range)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): what a one-line error quotes."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a full disk, a missing permission or a file cut short raises: OSError, and safetensors' own error
    (its writer and reader report I/O failures as a SafetensorError)."""
    from safetensors import SafetensorError

    return (OSError, SafetensorError)


def describe_storage_error(err: BaseException) -> str:
    """``'FILE': reason`` for an OSError that names its file, else the error's first line."""
    if isinstance(err, OSError):
        where = f"'{err.filename}': " if err.filename else ""
        return where + (err.strerror or first_line(err))
    return first_line(err)

"""Building blocks of every config dataclass (``TrainConfig``, the openai judge's keys, ``prefopt train-judge``'s
config): a field with its help text, and range checks whose error names the key. No other prefopt import, so any
config module can use it without an import cycle."""

from __future__ import annotations

from dataclasses import field

from prefopt.errors import ConfigError


def _f(default, help: str, **kw):
    """A dataclass field with its help text (listed by ``--help-keys``); a list or dict default is copied per
    instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def require(config, checks) -> None:
    """Raise a ConfigError for the first ``(key, ok, expected)`` of ``checks`` that is not ``ok``, naming the key,
    what was expected and ``config``'s value."""
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(f"config key '{name}' must be {expected}, got {getattr(config, name)}")


def require_positive(config, names) -> None:
    """Every key of ``names`` is >= 1."""
    require(config, [(name, getattr(config, name) >= 1, ">= 1") for name in names])

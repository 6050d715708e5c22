"""Evaluation presets: YAML files of command-line flag values (a paper's decoding, a benchmark's judge settings),
given as ``--preset FILE`` (several merge in order; flags typed on the command line win).

A preset is a flat mapping ``flag_name: value`` plus two keys that document it and are not flags: ``source`` (where
each value comes from) and ``unconfirmed`` (values no primary source confirmed). ``${VAR}`` in a string value is
read from the environment (an arena-hard-auto or FastChat checkout, a data folder); an unset variable is an error
naming it. The presets shipped with prefopt are in ``eval/presets/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from prefopt.errors import ConfigError

DOC_KEYS = ("source", "unconfirmed")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value, path: str, key: str):
    if isinstance(value, list):
        return [_expand(v, path, key) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"preset '{path}' key '{key}': environment variable {name} is not set")
        return os.environ[name]

    return VARIABLE.sub(lookup, value)


def load_presets(paths: list[str], flags: set[str], command: str) -> dict:
    """The flag values of ``paths`` merged in order; every key must be one of ``flags`` (the command's)."""
    values: dict = {}
    for path in paths:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"preset '{path}' does not exist")
        try:
            record = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"preset '{path}': not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(record, dict):
            raise ConfigError(f"preset '{path}': expected a mapping of flag names to values")
        for key, value in record.items():
            if key in DOC_KEYS:
                continue
            if key not in flags:
                raise ConfigError(f"preset '{path}': unknown key '{key}' (not a flag of prefopt {command})")
            values[key] = _expand(value, path, key)
    return values

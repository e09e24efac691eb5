"""User-facing errors.

Anything raised as an :class:`IndvisionError` is printed to the user as one clear line (no
traceback): it names the file or setting at fault and what to do. Everything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class IndvisionError(Exception):
    """A problem the user can fix (bad input, config or file). Printed without traceback."""

    exit_code = 1


class ConfigError(IndvisionError):
    """An invalid pipeline file or setting. Raised before any work starts (exit code 2)."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or a list of valid choices."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid: {', '.join(choices)})" if choices else ""

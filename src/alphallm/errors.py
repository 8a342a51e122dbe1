"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

__all__ = ["UserError", "first_line"]


class UserError(Exception):
    """Bad input from the user (a file, a path, a config value): the message names the culprit.

    The CLI prints ``alphallm: error: <message>`` and exits with status 2, without a traceback.
    """


def first_line(exc: BaseException) -> str:
    """An exception's message in one line of at most 200 characters (its type when it has none): what a
    one-line error quotes of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__

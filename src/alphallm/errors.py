"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user (a file, a path, a config value): the message names the culprit.

    The CLI prints ``alphallm: error: <message>`` and exits with status 2, without a traceback.
    """

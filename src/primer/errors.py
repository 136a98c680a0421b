"""Expected, user-facing errors.

Anything a user can cause and fix (a missing file, a bad recipe field, a prompt longer than the
context) raises `PrimerError` with a one-line message saying what and how to fix it. The CLI prints
that line without a traceback; everything else is a bug and keeps its traceback.
"""


class PrimerError(Exception):
    """An error the user can fix; its message is shown as-is, without a traceback."""

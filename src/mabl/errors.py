"""User-facing errors.

Anything a user can cause (bad flag, unknown env, broken checkpoint, misbehaving env) is raised as a
:class:`MablError`. The CLI prints its message as one line and exits non-zero, without a traceback.
"""


class MablError(Exception):
    """An error caused by input: the message says what was wrong and what is allowed."""

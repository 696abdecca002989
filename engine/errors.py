"""Errors a person can act on.

A `UserError` carries one sentence that names the file, row or field and says what would be
right. Front ends print `str(error)` and exit with `error.exit_code`; they never show a traceback.
"""


class UserError(Exception):
    """Bad input: a session, a dataset, a model name, a command-line value."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SessionError(UserError):
    """The session file is missing, not JSON, or does not match the schema."""


class DataError(UserError):
    """The dataset cannot be loaded, mapped or rendered."""


class ModelError(UserError):
    """The model cannot be found or read."""

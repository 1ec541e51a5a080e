"""Errors the CLI turns into one line on stderr and an exit code (no traceback)."""


class AutotuneError(Exception):
    exit_code = 2


class UsageError(AutotuneError):
    """Bad input: unknown model/backend, malformed space file, unusable storage, ..."""

    exit_code = 2


class NothingFoundError(AutotuneError):
    """A valid question with no answer (e.g. no feasible trial to export)."""

    exit_code = 1

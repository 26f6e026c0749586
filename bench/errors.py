"""Errors the command line turns into one-line messages and exit codes."""


class BenchError(Exception):
    """A failure the user can act on; the message says what to fix."""

    exit_code = 1


class UsageError(BenchError):
    """Bad input: an unknown name, an invalid file or field, a busy port (exit code 2)."""

    exit_code = 2


class EngineError(BenchError):
    """The engine failed to start, answer or stay alive (exit code 3)."""

    exit_code = 3

"""Errors that initbench reports to users as one line (exit code 2 on the command line)."""


class UsageError(ValueError):
    """Bad input from the user: an unknown name, an empty grid, an unreadable file."""


class RunsFailed(RuntimeError):
    """Every run of a sweep failed: nothing was measured (exit code 1 on the command line)."""

"""Exceptions that map to the exit codes of the command-line contract (docs/CONTRACTS.md)."""


class UsageError(Exception):
    """Bad input or usage: one line on stderr, exit code 2, nothing written."""


class DataError(UsageError):
    """Missing or malformed data (also exit 2): the message says where to put which files."""

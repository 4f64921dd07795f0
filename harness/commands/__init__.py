"""The subcommands of ``harness`` (``harness.cli`` parses and dispatches): run, list, train."""

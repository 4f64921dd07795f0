"""Command line: the dispatch of ``run``, ``list``, ``train``, ``check``, ``certify`` and ``grid``
(contracts: docs/CONTRACTS.md); the parser is ``harness.commands.parser``, the subcommands live in ``harness.commands``, ``harness.certify`` and ``harness.grid``.

Exit codes: 0 success; 1 internal error; 2 bad input or usage (one line on stderr, nothing written);
3 ``check`` found a regression.  A traceback is printed only with ``--debug``.
"""
from __future__ import annotations

import sys

from harness.core.errors import UsageError
from harness.core.progress import quieted

from .commands.parser import build_parser


def check_names(args) -> None:
    """Refuse a misspelt plugin name (``--attack``, ``--defense``, ``--dataset``, ``--recipe``) with the closest names
    before any plugin, or torch, is imported: the names are checked against the entry points' (the registries)."""
    from harness.config import split_label
    from harness.core.registry import ATTACKS, DATASETS, DEFENSES, RECIPES

    for registry, flag in ((DEFENSES, "defense"), (ATTACKS, "attack"), (DATASETS, "dataset"), (RECIPES, "recipe")):
        given = getattr(args, flag, None)
        for text in [given] if isinstance(given, str) else given or []:
            registry.check(split_label(text)[1])


def dispatch(args, argv: list[str]) -> int:
    """Run the parsed subcommand."""
    if args.command == "check":
        from .check import run_check

        return run_check(args.baseline, args.results, args.tolerance, alpha=args.alpha, strict=args.strict,
                         allow_seed_change=args.allow_seed_change, allow_model_change=args.allow_model_change,
                         fail_on_flags=args.fail_on_flags, fmt=args.format, report=args.report)
    if args.command == "grid":
        from harness.grid import cmd_grid

        return cmd_grid(args)
    check_names(args)
    if args.command == "list":
        from .commands.listing import cmd_list

        return cmd_list(args)
    if args.command == "train":
        from .commands.train import cmd_train

        return cmd_train(args)
    if args.command == "certify":
        from .certify import cmd_certify

        return cmd_certify(args, argv)
    from .commands.run import cmd_run

    return cmd_run(args, argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        with quieted(getattr(args, "quiet", False)):  # --quiet: the one switch (harness.core.progress)
            return dispatch(args, argv)
    except UsageError as err:
        if debug:
            raise
        print(f"harness: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a reader that closed (| head)
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"harness: internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1

"""Command line: the parser and the dispatch of ``run``, ``list``, ``train``, ``check`` (contract in DESIGN.md),
``certify`` and ``grid``; the subcommands live in ``harness.commands``, ``harness.certify`` and ``harness.grid``.

Exit codes: 0 success; 1 internal error; 2 bad input or usage (one line on stderr, nothing written);
3 ``check`` found a regression.  A traceback is printed only with ``--debug``.
"""
from __future__ import annotations

import argparse
import sys

from harness.core.errors import UsageError
from harness.core.progress import set_quiet

EPILOG = """examples:
  harness run --defense none --attack pgd_linf                 # the embedded default: digits, digits_cnn_adv
  harness run --defense preempt --attack adaptive_l2           # preemptive robustification vs its adaptive attack
  harness list attacks                                         # names, parameters, defaults
  harness check --baseline reports/baselines/digits_default.csv runs/<hash>/results.csv

exit codes: 0 success, 1 internal error, 2 bad input or usage (one line on stderr, nothing written),
3 'check' found a regression"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage block too)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description="Adversarial attack-defense evaluation harness",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from .batching import parse_batch_size

    def common(sp, auto_batch=False):
        sp.add_argument("--dataset", default="digits",
                        help="dataset name (default digits, embedded; see 'harness list datasets')")
        sp.add_argument("--data-dir", default=None,
                        help="folder holding the files of a dataset that is not embedded (mnist, cifar10, ...)")
        sp.add_argument("--split", default=None, help="dataset split (default: test for run, train for train)")
        sp.add_argument("--arch", default=None, help="architecture of a --model checkpoint path ('harness list models')")
        sp.add_argument("--batch-size", type=parse_batch_size if auto_batch else int, default=None,
                        help="images per batch (default 500; train: 128)" + ("; auto: the largest that fits the device "
                             "(a probe halving on out-of-memory from min(n, 4096) on CUDA; 500 on the CPU)" if auto_batch else ""))
        sp.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0): same seed, same CSV")
        sp.add_argument("--device", default="auto", help="auto|cpu|cuda[:i]")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a plugin parameter (name.key=value for one plugin; 'harness list attacks' "
                             "shows them)")
        sp.add_argument("--quiet", action="store_true", help="no progress bars and no table on stdout")
        sp.add_argument("--debug", action="store_true", help="show tracebacks")

    r = sub.add_parser("run", help="evaluate defenses against attacks and write the report",
                       epilog="names: 'harness list defenses', 'harness list attacks', 'harness list zoo'")
    r.add_argument("--defense", action="append", default=None,
                   help="defense NAME or LABEL=NAME (repeatable; default none; 'harness list defenses')")
    r.add_argument("--attack", action="append", default=None,
                   help="attack NAME or LABEL=NAME: a labelled instance takes --set LABEL.key=value "
                        "(repeatable; default pgd_linf; 'harness list attacks')")
    r.add_argument("--model", default=None, help="zoo name or checkpoint path (default: the dataset's model)")
    r.add_argument("--norm", default=None, choices=None, help="linf|l2 (default: the attacks' own norm)")
    r.add_argument("--eps", default=None, help="budget, e.g. 0.1 or 8/255, or several: 0.05,0.1,0.2 (default: the dataset's)")
    r.add_argument("--n", type=int, default=None, help="evaluate the first N samples")
    r.add_argument("--passes", type=int, default=10, help="classifications of each adversarial image by a randomized defense")
    r.add_argument("--out", default=None, help="output folder (default runs/<config hash>)")
    r.add_argument("--no-samples", action="store_true", help="do not write samples.csv")
    r.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="autocast dtype of the defenses' preparation and the attacks (default fp32; fp16 on CUDA only); "
                        "verdicts are always fp32, and a low precision is checked against fp32 on a sample")
    r.add_argument("--fidelity-n", type=int, default=None,
                   help="images of the fp32 fidelity check of a --precision other than fp32 (default 100; 0: none)")
    common(r, auto_batch=True)

    ls = sub.add_parser("list", help="list plugins")
    ls.add_argument("kind", nargs="?", default=None, help="datasets|models|zoo|attacks|defenses|recipes")
    ls.add_argument("pattern", nargs="?", default="*")
    ls.add_argument("--debug", action="store_true")

    t = sub.add_parser("train", help="train a model with a recipe and save a checkpoint")
    t.add_argument("--recipe", default="pgd")
    t.add_argument("--model", default=None, help="checkpoint to start from (optional)")
    t.add_argument("--defense", default=None, help="train this purifier (hgd, nrp, jatp) instead of a classifier")
    t.add_argument("--target-model", default=None, help="the classifier a purifier is trained for (zoo name or PATH with --arch)")
    t.add_argument("--epochs", type=int, default=None, help="epochs (default: 15 for recipes, the purifier's own)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's own; SGD 0.1)")
    t.add_argument("--out", required=True, help="checkpoint path to write")
    common(t)

    ce = sub.add_parser("certify", help="CERTIFY a smoothed classifier over a dataset (Cohen et al. 2019)")
    ce.add_argument("--model", default="digits_cnn_gauss", help="zoo name, or a checkpoint path with --arch")
    ce.add_argument("--defense", default="smoothing",
                    help="a defense that certifies (smoothing; preempt_smooth certifies the robustified images x_r, "
                         "preemptive paper, Table 7)")
    ce.add_argument("--sigma", type=float, default=0.25)
    ce.add_argument("--N0", type=int, default=100, help="selection draws (n0)")
    ce.add_argument("--N", type=int, default=100_000, help="estimation draws (n)")
    ce.add_argument("--alpha", type=float, default=0.001)
    ce.add_argument("--batch", type=int, default=1000, help="noisy inputs per forward pass")
    ce.add_argument("--n", type=int, default=None, help="certify the first N images (after --skip)")
    ce.add_argument("--skip", type=int, default=1, help="take every K-th image (Cohen's --skip)")
    ce.add_argument("--eps", default=None, help="attack budget to add to the radii, e.g. 0.5 or 8/255 (and, with preempt_smooth, its eps = delta)")
    ce.add_argument("--norm", default="l2", choices=("l2", "linf"))
    ce.add_argument("--radii", default="0,0.25,0.5,0.75,1")
    ce.add_argument("--step", type=float, default=0.01, help="radius step of certified_curve.csv")
    ce.add_argument("--out", default=None, help="output folder (default runs/certify-<config hash>)")
    common(ce)

    c = sub.add_parser("check", help="fail (exit 3) when results fell below a baseline")
    c.add_argument("--baseline", required=True)
    c.add_argument("--tolerance", type=float, default=1.0, help="points of accuracy allowed to be lost")
    c.add_argument("results")
    c.add_argument("--debug", action="store_true")

    g = sub.add_parser("grid", help="run a grid of runs from a TOML file (docs/GRIDS.md); resumes where it stopped")
    g.add_argument("file", help="grid file, e.g. reports/grids/ci_default.toml")
    g.add_argument("--out", default=None, help="output folder (default: the file's [grid] out, else runs/grids/<stem>)")
    g.add_argument("--dry-run", action="store_true", help="list the cells, their state and commands; run nothing")
    g.add_argument("--backend", default="local", choices=("local", "ray"), help="local (default) or ray (the [ray] extra)")
    g.add_argument("--address", default=None, help="Ray cluster address (auto, HOST:6379, ray://HOST:10001)")
    g.add_argument("--quiet", action="store_true", help="no progress bars and no table on stdout")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def check_names(args) -> None:
    """Refuse a misspelt plugin name (``--attack``, ``--defense``, ``--dataset``, ``--recipe``) with the closest names
    before any plugin, or torch, is imported: the names are checked against the entry points' (the registries)."""
    from harness.config import split_label
    from harness.core.registry import ATTACKS, DATASETS, DEFENSES, RECIPES

    for registry, flag in ((DEFENSES, "defense"), (ATTACKS, "attack"), (DATASETS, "dataset"), (RECIPES, "recipe")):
        given = getattr(args, flag, None)
        for text in [given] if isinstance(given, str) else given or []:
            registry.check(split_label(text)[1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        set_quiet(getattr(args, "quiet", False))
        if args.command == "check":
            from .check import run_check

            return run_check(args.baseline, args.results, args.tolerance)
        if args.command == "grid":
            from harness.grid import cmd_grid

            return cmd_grid(args, run=main)
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

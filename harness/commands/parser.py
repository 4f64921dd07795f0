"""The command line's parser: every subcommand's flags (docs/CONTRACTS.md).  Imports nothing of the project but
the floor, so a subcommand (``harness.commands.run.run_defaults``) can read its own defaults without importing the
CLI that dispatches to it."""
from __future__ import annotations

import argparse

from harness.core.errors import UsageError

EPILOG = """examples:
  harness run --defense none --attack pgd_linf                 # the embedded default: digits, digits_cnn_adv
  harness run --defense preempt --attack adaptive_l2           # preemptive robustification vs its adaptive attack
  harness list attacks                                         # names, parameters, defaults
  harness check --baseline reports/baselines/digits_default.csv runs/<hash>/results.csv

exit codes: 0 success, 1 internal error, 2 bad input or usage (one line on stderr, nothing written),
3 'check' found a regression"""


CHECK_HELP = """Compare a run's results.csv with a committed baseline; exit 3 when a cell fell.

Rows are matched by content: (dataset, defense, attack, threat, norm, eps), and, where a file holds several, the
model's weights hash (model_sha256), the seed and set.* values -- never the checkpoint's file name, so a renamed
file of the same weights is the same model.  The two files must describe the same experiment: the same data
(data_fingerprint), n, subset, seed (unless --allow-seed-change) and weights (unless --allow-model-change);
otherwise, or on bad input (no rows, a blank, non-numeric, nan or out-of-range accuracy, a duplicated cell), the
gate refuses with exit 2 and the reason.  A column that neither file has (older files) is not compared.

A cell's clean_acc or robust_acc regresses when it fell by more than --tolerance points AND the fall is
significant at --alpha: the exact one-sided McNemar test on the per-sample verdicts when both runs kept them
(samples.csv beside results.csv; NAME.samples.csv beside another NAME.csv; a grid's cells/<id>/samples.csv),
else the two exact Clopper-Pearson intervals (at the level whose separation is a test at --alpha).  --strict
keeps the plain point threshold.  A baseline cell missing from the results fails too.  Masking flags of the
results (results.csv 'flags') are reported as warnings, or fail the gate with --fail-on-flags.

exit codes: 0 no regression, 3 regression (or a flag with --fail-on-flags), 2 bad input or files not comparable.
See docs/CI.md for the JSON report, the JUnit and GitHub formats and a ready GitHub Actions workflow."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage block too)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description="Adversarial attack-defense evaluation harness",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from harness.batching import parse_batch_size

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
    r.add_argument("--model", default=None,
                   help="zoo name, checkpoint path (with --arch), or your own FILE.py:FACTORY / package.module:FACTORY "
                        "(imports your code; default: the dataset's model)")
    r.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of --model FACTORY (repeatable; sequences as a,b or (a,b) or [a,b])")
    r.add_argument("--weights", default=None, help="checkpoint loaded into the module --model FACTORY returns")
    r.add_argument("--normalize", default=None, metavar="mean=M,..,std=S,..",
                   help="normaliser the model does not hold itself (RobustBench-style checkpoints), applied before it")
    r.add_argument("--data", default=None, help="your data: an .npz (x, y), a .pt of (x, y) tensors or an image folder "
                                                "(instead of --dataset)")
    r.add_argument("--scale", type=float, default=None, help="divide --data pixel values by this (255 for uint8 images)")
    r.add_argument("--resize", type=int, default=None, help="image folders: resize the shorter side to this many pixels")
    r.add_argument("--crop", type=int, default=None, help="image folders: centre crop to this size")
    r.add_argument("--norm", default=None, choices=None, help="linf|l2 (default: the attacks' own norm)")
    r.add_argument("--eps", action="append", default=None,
                   help="budget, e.g. 0.1 or 8/255, or several: 0.05,0.1,0.2 (repeatable; default: the dataset's)")
    r.add_argument("--n", type=int, default=None,
                   help="evaluate N samples: a seeded class-stratified draw (see --subset; default: all)")
    r.add_argument("--subset", default="stratified", choices=("stratified", "first"),
                   help="how --n draws: stratified by class (default; seeded by --subset-seed) or the first N")
    r.add_argument("--subset-seed", type=int, default=0, help="seed of the stratified draw (default 0)")
    r.add_argument("--indices", default=None, help="file of the sample indices to evaluate (one per line)")
    r.add_argument("--from", dest="from_", default=None, metavar="RUN_JSON",
                   help="rerun the run a run.json records (its spec); only --out, --device, --quiet may be added")
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
    ls.add_argument("--markdown", action="store_true",
                    help="names and descriptions as Markdown tables (default kinds: defenses, attacks; README's list)")
    ls.add_argument("--debug", action="store_true")

    t = sub.add_parser("train", help="train a model with a recipe and save a checkpoint")
    t.add_argument("--recipe", default="pgd")
    t.add_argument("--model", default=None, help="checkpoint to start from (optional)")
    t.add_argument("--defense", default=None, help="train this purifier (hgd, nrp, jatp) instead of a classifier")
    t.add_argument("--target-model", default=None, help="the classifier a purifier is trained for (zoo name or PATH with --arch)")
    t.add_argument("--epochs", type=int, default=None, help="epochs (default: 15 for recipes, the purifier's own)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's own; SGD 0.1)")
    t.add_argument("--out", required=True, help="checkpoint path to write (OUT.partial.pt holds the epochs done "
                                                "until it is written: the same command resumes there)")
    t.add_argument("--restart", action="store_true",
                   help="discard OUT.partial.pt (an interrupted, damaged or other training's checkpoint) and start over")
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

    c = sub.add_parser("check", help="fail (exit 3) when results fell below a baseline (a CI regression gate)",
                       description=CHECK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("results", help="results.csv of the run to judge (or its run / grid folder)")
    c.add_argument("--baseline", required=True, help="the committed results.csv to compare with (or its folder)")
    c.add_argument("--tolerance", type=float, default=1.0,
                   help="points of accuracy a cell may lose (default 1.0); a larger fall fails only when significant")
    c.add_argument("--alpha", type=float, default=0.05,
                   help="significance level of the one-sided test of a fall (default 0.05)")
    c.add_argument("--strict", action="store_true",
                   help="the plain point threshold: any fall > --tolerance fails, significant or not")
    c.add_argument("--allow-seed-change", action="store_true", help="compare runs made with different --seed")
    c.add_argument("--allow-model-change", action="store_true",
                   help="compare runs of different weights (model_sha256): 'my model changed, did robustness fall?'")
    c.add_argument("--fail-on-flags", action="store_true", help="a gradient-masking flag in the results fails too (exit 3)")
    c.add_argument("--format", default="text", choices=("text", "json", "junit", "github"),
                   help="output on stdout (default text); github: ::error/::warning annotations, and a Markdown "
                        "summary appended to $GITHUB_STEP_SUMMARY when set")
    c.add_argument("--report", default=None, metavar="FILE", help="also write the outcome as JSON to FILE")
    c.add_argument("--debug", action="store_true", help="show tracebacks")

    g = sub.add_parser("grid", help="run a grid of runs from a TOML file (docs/GRIDS.md); resumes where it stopped")
    g.add_argument("file", help="grid file, e.g. reports/grids/ci_default.toml")
    g.add_argument("--out", default=None, help="output folder (default: the file's [grid] out, else runs/grids/<stem>)")
    g.add_argument("--dry-run", action="store_true", help="list the cells, their state and commands; run nothing")
    g.add_argument("--backend", default="local", choices=("local", "ray"), help="local (default) or ray (the [ray] extra)")
    g.add_argument("--address", default=None, help="Ray cluster address (auto, HOST:6379, ray://HOST:10001)")
    g.add_argument("--report-into", default=None, metavar="PAGE",
                   help="then commit results.csv to reports/results/<stem>.csv and render it into PAGE's section of "
                        "this grid (docs/results/*.md; harness/grid/pages.py)")
    g.add_argument("--quiet", action="store_true", help="no progress bars and no table on stdout")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return p

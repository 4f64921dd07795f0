"""``python -m harness.figures images``: x_o / x_r / x_adv / |x_r - x_o| of the first test images (Figure 6 style).

    python -m harness.figures images --defense preempt --attack adaptive_l2 --n 8 --out DIR [--set key=value ...]

A run keeps no images, so this builds the run's parts the way ``harness run`` does (``harness.assembly``: the
same defaults, ``--set`` overrides, budget and seeds) and evaluates one batch of the first ``--n`` images:
``defense.prepare`` gives x_r, and the attack runs through ``harness.threat.run_cell`` on the images the defended
classifier gets right, as in a run.  So the images are those of ``harness run`` with the same options and the same
``--n`` (one batch).  x_adv is the image the attack returns (the adaptive attacks: the one at eps' = eps; the run's
verdict takes the worst case over its whole sweep); an image the defense already misclassifies is not attacked
(x_adv = x_r).  Under each x_r and x_adv: the defended prediction (red when wrong) and, under x_adv, its distance
to x_o ("> eps": outside the budget of the original, an invalid adversarial image).  Writes DIR/images.png and
DIR/images.pdf (``harness.figures.image_grid``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.core.errors import UsageError
from harness.core.progress import is_quiet, quieted


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as the harness
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m harness.figures", description="figures that need images (a run keeps none)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    im = sub.add_parser("images", help="x_o / x_r / x_adv / |x_r - x_o| of the first test images (Figure 6 style)")
    im.add_argument("--defense", default="preempt", help="defense name (default preempt)")
    im.add_argument("--attack", default="adaptive_l2", help="attack name (default adaptive_l2)")
    im.add_argument("--n", type=int, default=8, help="the first N test images (default 8)")
    im.add_argument("--out", required=True, help="folder for images.png and images.pdf")
    im.add_argument("--dataset", default="digits")
    im.add_argument("--data-dir", default=None)
    im.add_argument("--split", default=None, help="dataset split (default test)")
    im.add_argument("--model", default=None, help="zoo name or checkpoint path (default: the dataset's model)")
    im.add_argument("--arch", default=None, help="architecture of a --model checkpoint path")
    im.add_argument("--norm", default=None, help="linf|l2 (default: the attack's own norm)")
    im.add_argument("--eps", default=None, help="budget (default: the dataset's)")
    im.add_argument("--seed", type=int, default=0)
    im.add_argument("--device", default="auto", help="auto|cpu|cuda[:i]")
    im.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as harness run --set")
    im.add_argument("--quiet", action="store_true")
    im.add_argument("--debug", action="store_true")
    return p


class _Keep:
    """The attack, keeping the images its ``run`` hands back (everything else is the attack's own)."""

    def __init__(self, attack):
        self._attack, self.images = attack, None

    def __getattr__(self, name):
        return getattr(self._attack, name)

    def run(self, *a, **kw):
        result = self._attack.run(*a, **kw)
        self.images = result.images.detach()
        return result


def cmd_images(args) -> int:
    import torch

    from harness.build import build
    from harness.commands.run import spec_from_options
    from harness.core.budget import Budget
    from harness.core.geometry import flat_norm

    from ..engine import cell_seed
    from ..threat import resolve_threat, run_cell, within_budget
    from . import NORM_TEXT, image_grid

    options = {"defense": [args.defense], "attack": [args.attack], "model": args.model, "arch": args.arch,
               "dataset": args.dataset, "data_dir": args.data_dir, "split": args.split, "n": args.n,
               "subset": "first", "eps": [args.eps] if args.eps is not None else None, "norm": args.norm,
               "seed": args.seed, "device": args.device, "set": args.set}
    run = build(spec_from_options(options))  # the run's own assembly: the same model, data, plugins and seeds
    [(dname, entrant)], [(aname, attack)] = run.defenses, run.attacks
    model, model_name, data, device, norm, eps = run.model, run.model_name, run.data, run.device, run.norm, run.eps_list[0]
    budget = Budget(norm, eps)
    defense = entrant.at(budget)
    for p in model.parameters():
        p.requires_grad_(False)
    if isinstance(defense, torch.nn.Module):
        defense.to(device).eval()
    x, y = data.x.to(device), data.y.to(device)
    torch.manual_seed(cell_seed(args.seed, run.identities[dname], "prepare", 0))  # the seeds of a run's first batch
    x_r = defense.prepare(model, x, y).detach().to(x.dtype)
    pred_r = defense.classify(model, x_r)
    torch.manual_seed(cell_seed(args.seed, run.identities[dname], run.identities[aname], 0))
    keep = _Keep(attack)
    run_cell(defense, model, keep, resolve_threat(defense, attack), budget, x, x_r, y, pred_r == y)
    x_adv = x_r.clone()
    if keep.images is not None:
        x_adv[(pred_r == y).nonzero().flatten()] = keep.images.to(x_adv)
    attacked = pred_r == y
    with torch.no_grad():
        pred_adv = defense.classify(model, x_adv)
    inside, dist = within_budget(x_adv, x, budget.norm, budget.eps)
    notes = [f"dist {float(d):.2f}" + ("" if ok else " > $\\epsilon$") if a else "not attacked"
             for d, ok, a in zip(dist, inside, attacked)]
    norm_text = NORM_TEXT.get(norm, norm)
    title = (f"{data.name} / {model_name}: {dname} vs {aname} ({norm_text} $\\epsilon$ = {eps:g})\n"
             f"first {len(y)} {args.split or 'test'} images; max $|x_r - x_o|$ = {float((x_r - x).abs().max()):.3g}, "
             f"mean {norm_text} $\\|x_r - x_o\\|$ = {float(flat_norm(x_r - x, norm).mean()):.3g}")
    out = Path(args.out)
    written = image_grid(x.cpu(), x_r.cpu(), x_adv.cpu(), out / "images", labels=y.cpu(), pred_r=pred_r.cpu(),
                         pred_adv=pred_adv.cpu(), title=title, notes=notes)
    if not is_quiet():
        print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        with quieted(args.quiet):  # --quiet: the one switch (harness.core.progress)
            return cmd_images(args)
    except UsageError as err:
        if debug:
            raise
        print(f"harness.figures: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2

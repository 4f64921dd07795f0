"""Defense-GAN's two effects (lecture slides "Defense-GAN: effect of L" and "effect of R"; Samangouei et al.,
ICLR 2018, Figures 3-4) and its break by BPDA (Athalye et al., ICML 2018, Sec. 5.4.1), as Markdown tables.

For each setting of L (with R = 1) and of R (with L = 25), and the paper's L = 200, R = 10, accuracy of the
classifier behind P(x) = G(z*(x)) (``defenses.defense_gan``) on the first ``--n`` test images:

* clean: P(x);
* oblivious FGSM (Goodfellow et al. 2015): x' = FGSM on the bare classifier (the attacker does not know P), then P(x');
* white-box BPDA-FGSM / BPDA-PGD (``attacks.bpda``, identity backward: the gradient of the loss at P(x) applied to
  x): the attacks differentiate "through" P (``white_box``).

Each cell is seeded (``torch.manual_seed(seed)`` before it, as the engine seeds a cell); P is randomized, so an
adversarial image is judged by one fresh reconstruction.

    OMP_NUM_THREADS=1 python scripts/defense_gan_table.py                 # digits (default), eps 0.1 and 0.2
    OMP_NUM_THREADS=1 python scripts/defense_gan_table.py --dataset mnist  # MNIST test-holdout, eps 0.3

MNIST needs /work/shared/data (``--data-dir``; skipped with a message when absent), trains ``mnist_cnn`` (about
10 minutes on the CPU) and a 28x28 generator (``defenses.defense_gan.TRAIN_DEFAULTS``; about 25 minutes on one CPU
thread) on first use.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.plugins import load_builtins

SETTINGS = {"digits": {"model": "digits_cnn", "split": "test", "eps": "0.1,0.2", "step_size": 0.1},
            "mnist": {"model": "mnist_cnn", "split": "test-holdout", "eps": "0.3", "step_size": 0.01}}


def ints(text: str) -> list[int]:
    """``"1,2,5"`` -> [1, 2, 5]: the L or R values of a sweep (slides "Defense-GAN: effect of L / of R")."""
    return [int(t) for t in text.split(",") if t.strip()]


def accuracy(defense, clf, x, y, seed: int) -> float:
    """Accuracy of clf(P(x)) with one reconstruction seeded by ``seed`` (Defense-GAN, Samangouei et al. 2018,
    Sec. 3.2: the classifier sees G(z*(x)))."""
    torch.manual_seed(seed)
    return (defense.classify(clf, x) == y).float().mean().item()


def white_box(defense, clf, x, y, eps: float, pgd_steps: int, seed: int) -> list[float]:
    """BPDA (Athalye et al. 2018, Sec. 4.1; slide "Breaking preprocessing-based defenses"): FGSM and PGD on
    clf(BPDA(P)) with P's backward replaced by the identity (``attacks.bpda``).  BPDA-FGSM is the registered
    ``bpda`` attack with ``inner=fgsm``; BPDA-PGD runs ``attacks.pgd.PGD`` (steps of eps/4, random start) on
    ``bpda_surface`` with ``early_stop=False``: P is randomized, and the registered ``bpda`` (whose inner PGD
    stops a sample on the first draw that fools it) is judged by a fresh draw afterwards."""
    from attacks.bpda import bpda_surface
    from attacks.pgd import PGD
    from harness.core.registry import ATTACKS

    out = []
    torch.manual_seed(seed)
    x_f = ATTACKS.create("bpda", norm="linf", eps=eps, inner="fgsm").perturb(
        defense.surface(clf, "white-box"), x, y, defense=defense, classifier=clf).detach()
    out.append(accuracy(defense, clf, x_f, y, seed + 1))
    if pgd_steps > 0:
        torch.manual_seed(seed + 2)
        x_p = PGD(norm="linf", eps=eps, steps=pgd_steps, early_stop=False).perturb(bpda_surface(defense, clf), x, y)
        assert (x_p - x).abs().max() <= eps + 1e-6
        out.append(accuracy(defense, clf, x_p.detach(), y, seed + 3))
    return out


def main(argv=None) -> int:
    """Print the tables: accuracy of clf(G(z*(x))) (Defense-GAN, Samangouei et al. 2018, eq. 8 by Algorithm 1) as L
    grows (R = 1) and as R grows (L = 25) under oblivious FGSM (Goodfellow et al. 2015, x + eps sign(grad)) and
    white-box BPDA (Athalye et al. 2018, Sec. 4.1)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits", choices=sorted(SETTINGS))
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", default=None, help="Linf budgets, comma-separated (default: 0.1,0.2 digits; 0.3 MNIST)")
    ap.add_argument("--step-size", type=float, default=None, help="GD step on ||G(z)-x||^2 (default 0.1 digits, 0.01 MNIST)")
    ap.add_argument("--Ls", default="0,10,25,50,100,200", help="L values of the first table (R = 1)")
    ap.add_argument("--Rs", default="1,2,5,10", help="R values of the second table (L = 25)")
    ap.add_argument("--pgd-steps", type=int, default=10, help="steps of BPDA-PGD (of eps/4); 0: leave it out")
    ap.add_argument("--no-paper-row", action="store_true", help="leave out the paper's L = 200, R = 10")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    load_builtins()
    import defenses.defense_gan  # noqa: F401 - registers defense_gan
    from harness.core.registry import ATTACKS, DEFENSES
    from harness.data import load
    from harness.models.zoo import load_zoo

    cfg = SETTINGS[args.dataset]
    epses = [float(e) for e in (args.eps or cfg["eps"]).split(",") if e.strip()]
    step = cfg["step_size"] if args.step_size is None else args.step_size
    data_dir = None
    if args.dataset == "mnist":
        if not (Path(args.data_dir) / "mnist").is_dir():
            print(f"skipped: MNIST is not in {args.data_dir} (give --data-dir)")
            return 0
        data_dir = args.data_dir
    t0 = time.time()
    data = load(args.dataset, cfg["split"], data_dir).take(args.n)
    x, y = data.x, data.y
    clf = load_zoo(cfg["model"], quiet=True, data_dir=data_dir).eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    DEFENSES.create("defense_gan", L=0, R=1, dataset=args.dataset, data_dir=data_dir)  # train / load G once
    x_obl, bare = {}, {}
    for eps in epses:  # oblivious FGSM: crafted once on the bare classifier
        torch.manual_seed(args.seed)
        x_obl[eps] = ATTACKS.create("fgsm", norm="linf", eps=eps).perturb(clf, x, y).detach()
        with torch.no_grad():
            bare[eps] = (clf(x_obl[eps]).argmax(1) == y).float().mean().item()
    with torch.no_grad():
        bare_clean = (clf(x).argmax(1) == y).float().mean().item()
    attacks = ["BPDA-FGSM"] + ([f"BPDA-PGD-{args.pgd_steps}"] if args.pgd_steps > 0 else [])

    def measure(L, R) -> list[float]:
        """clean, then per eps: oblivious FGSM, the white-box BPDA attacks; accuracy of clf(P(.))."""
        d = DEFENSES.create("defense_gan", L=L, R=R, step_size=step, dataset=args.dataset, data_dir=data_dir)
        vals = [accuracy(d, clf, x, y, args.seed)]
        for eps in epses:
            vals.append(accuracy(d, clf, x_obl[eps], y, args.seed + 1))
            vals += white_box(d, clf, x, y, eps, args.pgd_steps, args.seed + 2)
        return vals

    header = ["clean"] + [f"{a} {eps:g}" for eps in epses for a in ["oblivious FGSM"] + attacks]
    fmt = lambda v: f"{100 * v:.1f}"

    def table(label, rows):
        """One Markdown table of the sweep ``label`` (slides "Defense-GAN: effect of L", "effect of R")."""
        print(f"| {label} | " + " | ".join(header) + " |")
        print("|" + "---|" * (len(header) + 1))
        print(f"| no defense | {fmt(bare_clean)} | " + " | ".join(
            " | ".join([fmt(bare[eps])] + ["-"] * len(attacks)) for eps in epses) + " |")
        for key, vals in rows:
            print(f"| {key} | " + " | ".join(fmt(v) for v in vals) + " |")
        print(flush=True)

    print(f"Defense-GAN on {args.dataset} {cfg['split']} (first {len(y)} images), classifier {cfg['model']}, "
          f"Linf, GD step {step:g} on ||G(z)-x||^2; accuracy (%). Oblivious: FGSM on the bare classifier; "
          f"white-box: BPDA (identity backward) through P.\n", flush=True)
    table("R = 1", [(f"L = {L}", measure(L, 1)) for L in ints(args.Ls)])
    table("L = 25", [(f"R = {R}", measure(25, R)) for R in ints(args.Rs)])
    if not args.no_paper_row:
        table("paper", [("L = 200, R = 10", measure(200, 10))])
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The lecture's adversarial-training family on the embedded digits: clean, FGSM, PGD-20 and AutoAttack accuracy and
the training cost of each recipe (``defenses.adversarial_training``; the slides "FGSM adversarial training" to
"Adversarial training with additional unlabeled data" of the lecture "Defenses against adversarial attacks").

    OMP_NUM_THREADS=1 python scripts/training_table.py                 # 15 epochs, AutoAttack on the first 100
    OMP_NUM_THREADS=1 python scripts/training_table.py --epochs 2 --aa-n 20    # a smoke run

Every row trains the small CNN (``small_cnn``, image_size 8, the zoo's architecture) from the same initialisation
(seed) for the same ``--epochs`` on the digits training split (1,437 images), by ``defenses.adversarial_training.train``
(``fit``'s loop and schedule: SGD momentum 0.9, lr 0.1, weight decay 5e-4, cosine, batches of 128), Linf eps 0.1:
    standard                     plain training
    FGSM-AT                      Goodfellow et al. 2015, alpha 0.5, no random init
    Fast                         Wong et al. 2020, uniform start, step 1.25 eps
    Free                         Shafahi et al. 2019, m replays (epochs / m passes)
    PGD-10                       Madry et al. 2018, 10 steps of eps/4 (the reference)
    PGD-10, last / early-stopped Rice et al. 2020: one run with 10% of the split held out, the last epoch's weights
                                 and the best held-out PGD-10 epoch's
    TRADES                       Zhang et al. 2019, beta 6, 10 steps of eps/4
    PGD-10 on labeled only       the --labeled part of the split, no pool (same number of weight updates)
    pseudo-label                 Carmon et al. 2019: a standard teacher trained on the labeled part labels the rest,
                                 PGD-10 on both (and, with --zoo-teacher, the zoo's digits_cnn as teacher, which saw
                                 every label of the split)
Columns: accuracy (%) on the 360 digits test images clean, under FGSM and under PGD-20 (``pgd_linf``: 20 steps of
eps/4, random start), AutoAttack (standard version, ``attacks.autoattack``) on the first --aa-n test images; the
training cost in forward and backward passes per training image (counted by ``PassCounter``; the teacher's
included; early stopping's held-out evaluation in brackets); wall-clock training seconds.  Seeded, one thread.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import defenses.adversarial_training as at
from harness.core.budget import Budget
from harness.core.registry import ATTACKS, MODELS, RECIPES
from harness.data import load
from harness.plugins import load_builtins


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def robust(model, attack, x, y, seed: int, budget: Budget) -> float:
    torch.manual_seed(seed)
    return accuracy(model, attack.perturb(model, x, y, budget), y)


def frozen(model):
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def rows_to_train(args):
    eps, lab = args.eps, args.labeled
    yield "standard", RECIPES.create("standard"), None
    yield "FGSM-AT (alpha 0.5, no random init)", RECIPES.create("fgsm", eps=eps), None
    yield "Fast (uniform start, step 1.25 eps)", RECIPES.create("fast", eps=eps), None
    yield f"Free (m = {args.m})", RECIPES.create("free", eps=eps, m=args.m), None
    yield "PGD-10 (Madry)", RECIPES.create("pgd", eps=eps, steps=10), None
    yield "PGD-10, 10% held out", RECIPES.create("pgd", eps=eps, steps=10), at.EarlyStopping(eps=eps, val=args.val)
    yield "TRADES (beta 6)", RECIPES.create("trades", eps=eps), None
    yield f"PGD-10 on the {lab:g} labeled only", RECIPES.create("pseudo-label", eps=eps, labeled=lab, use_pool=False), None
    yield (f"pseudo-label ({lab:g} labeled, teacher trained on them)",
           RECIPES.create("pseudo-label", eps=eps, labeled=lab, teacher="labeled"), None)
    if args.zoo_teacher:
        yield (f"pseudo-label ({lab:g} labeled, zoo teacher digits_cnn)",
               RECIPES.create("pseudo-label", eps=eps, labeled=lab, teacher="digits_cnn"), None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=15, help="epochs of every recipe (15: the zoo's digits models; at 10 PGD-AT has not left its plateau)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--m", type=int, default=5, help="Free's replays (epochs / m passes; paper 8 on CIFAR-10)")
    p.add_argument("--labeled", type=float, default=0.2, help="the labeled part of the split for pseudo-label")
    p.add_argument("--val", type=float, default=0.1, help="held-out part of the split for early stopping")
    p.add_argument("--aa-n", type=int, default=100, help="AutoAttack on the first N test images (0: skip)")
    p.add_argument("--zoo-teacher", action="store_true", help="add pseudo-label with the zoo's digits_cnn as teacher")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/training_table")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    load_builtins()
    train, test = load("digits", "train"), load("digits", "test")
    fgsm = ATTACKS.create("fgsm")
    pgd20 = ATTACKS.create("pgd_linf")
    aa = ATTACKS.create("autoattack") if args.aa_n > 0 else None
    budget = Budget("linf", args.eps)
    n_split = len(train.x)
    table, log = [], {}
    t0 = time.time()
    for label, recipe, es in rows_to_train(args):
        torch.manual_seed(args.seed)
        model = MODELS.create("small_cnn", image_size=8)
        t = time.time()
        result = at.train(model, train.x, train.y, recipe, epochs=args.epochs, seed=args.seed, early_stop=es,
                          desc=label)
        seconds = time.time() - t
        fwd, bwd = result.per_image(n_split)
        cost = f"{fwd:.1f} / {bwd:.1f}"
        if es is not None:
            cost += f" (+{result.eval_forwards / n_split:.1f} / {result.eval_backwards / n_split:.1f})"
        variants = [(label, result.model)]
        if es is not None:
            last = copy.deepcopy(result.model)
            last.load_state_dict(result.last_state)
            variants = [(f"{label}: last epoch ({result.epochs})", last),
                        (f"{label}: early-stopped (epoch {result.best_epoch})", result.model)]
        cells = None
        for k, (name, m) in enumerate(variants):
            if not (k == 1 and result.best_epoch == result.epochs):  # the best epoch is the last: same weights
                m = frozen(m)
                cells = [accuracy(m, test.x, test.y), robust(m, fgsm, test.x, test.y, args.seed, budget),
                         robust(m, pgd20, test.x, test.y, args.seed, budget)]
                if aa is not None:
                    cells.append(robust(m, aa, test.x[:args.aa_n], test.y[:args.aa_n], args.seed, budget))
            table.append([name, *(f"{c:.1f}" for c in cells), cost, f"{seconds:.0f}"])
            print("| " + " | ".join(table[-1]) + " |", flush=True)
        log[label] = {"history": result.history, "best_epoch": result.best_epoch, "extra": result.extra,
                      "forwards": result.forwards, "backwards": result.backwards, "updates": result.updates,
                      "passes": result.epochs, "n_train": result.n_train}
    head = ["recipe", "clean", "FGSM", "PGD-20", f"AutoAttack (first {args.aa_n})", "fwd / bwd per image", "train s"]
    if aa is None:
        head.remove(head[4])
    lines = [(f"Adversarial training on digits (small CNN, {args.epochs} epochs each, Linf eps {args.eps}, seed "
              f"{args.seed}, one thread): accuracy (%) on the 360 test images; AutoAttack standard on the first "
              f"{args.aa_n}."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    for label, entry in log.items():
        if entry["history"]:
            curve = ", ".join(f"{100 * r:.1f}" for _, r in entry["history"])
            lines += ["", f"{label}: held-out PGD-10 accuracy per epoch: {curve} (best epoch {entry['best_epoch']})"]
        if "pseudo_label_accuracy" in entry["extra"]:
            lines += ["", (f"{label}: pseudo-labels agree with the withheld labels on "
                           f"{100 * entry['extra']['pseudo_label_accuracy']:.1f}% of the {entry['extra']['pool']} pool images")]
    lines += ["", f"({time.time() - t0:.0f} s in all)"]
    text = "\n".join(lines)
    print()
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    (out / "runs.json").write_text(json.dumps(log, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

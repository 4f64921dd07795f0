"""``harness train``: a classifier with a recipe, or what a defense learns (a purifier for a target model, a
generator from clean data), saved as a checkpoint.

Every training is checkpointed after each epoch to ``OUT.partial.pt`` (``harness.core.resume``), under a key of the
command's settings: the same command after a crash resumes at the last epoch (its bar starts there) and ends with
the weights an uninterrupted run gives; the checkpoint goes once OUT is written.  A checkpoint that is damaged or
was written by another command is refused (exit 2); ``--restart`` discards it and starts over."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from harness.core.errors import UsageError
from harness.core.progress import is_quiet

# What does not change the trained weights: left out of the checkpoint's key (``quiet``: the switch --quiet sets).
_NOT_IN_KEY = ("quiet", "out", "restart", "func", "command")


def partial_path(out: Path) -> Path:
    return Path(str(out) + ".partial.pt")


@contextmanager
def checkpointed(args, out: Path):
    """Run the block's training in a ``resume.session`` beside ``out``; remove the checkpoint after the block
    (the caller writes ``out`` inside it)."""
    from harness.core import resume
    from harness.core.artifacts import cache_key, sha256_file

    spec = {k: v for k, v in vars(args).items() if k not in _NOT_IN_KEY}
    for k in ("model", "target_model"):  # a weights file is keyed by its content, not its name
        if spec.get(k) and Path(spec[k]).is_file():
            spec[f"{k}_sha256"] = sha256_file(spec[k])
    with resume.session(partial_path(out), key=f"harness-train-{cache_key(spec)}",
                        resume=not getattr(args, "restart", False)) as run:
        yield
    run.discard()


def cmd_train(args) -> int:
    from harness.assembly import build_arch, pick_device
    from harness.writable import probe_writable
    from harness.config import Overrides
    from harness.core.artifacts import atomic_save
    from harness.core.registry import RECIPES
    from harness.core.training import fit
    from harness.data import load
    from harness.models.checkpoint import load_checkpoint

    if args.defense is not None:
        return train_defense(args)
    overrides = Overrides(args.set)
    args.epochs = 15 if args.epochs is None else args.epochs
    if args.epochs <= 0 or (args.lr is not None and not args.lr > 0):
        raise UsageError("--epochs and --lr must be positive")
    make_batch = RECIPES.create(args.recipe, **overrides.for_plugin(RECIPES, args.recipe))
    data = load(args.dataset, args.split or "train", args.data_dir)
    arch = args.arch or "small_cnn"
    model, kw = build_arch(arch, data, overrides)
    overrides.check_all_used()
    device = pick_device(args.device)
    if args.model:
        model = load_checkpoint(model, args.model, arch)
    out = Path(args.out)
    probe_writable(out.parent if out.parent != Path("") else Path("."), "--out")
    with checkpointed(args, out):
        model = fit(model.to(device), data.x, data.y, make_batch, epochs=args.epochs, lr=args.lr,
                    batch_size=args.batch_size, seed=args.seed, desc=f"train {arch} ({args.recipe})")
        atomic_save(model.state_dict(), out)
    meta = {"arch": arch, "arch_kw": kw, "recipe": args.recipe, "set": args.set, "dataset": args.dataset,
            "split": args.split or "train", "epochs": args.epochs, "lr": args.lr, "seed": args.seed}
    Path(str(out) + ".json").write_text(json.dumps(meta, indent=2) + "\n")
    if not is_quiet():
        print(f"wrote {out} (load with --model {out} --arch {arch})")
    return 0


def train_standalone(args) -> int:
    """``harness train --defense NAME``: a defense that learns from clean data alone says how (``train_to_file``)."""
    from harness.assembly import pick_device
    from harness.writable import probe_writable
    from harness.config import parse_sets
    from harness.core.capabilities import TrainsAlone, TrainsForTarget
    from harness.core.registry import DEFENSES

    if not DEFENSES.get(args.defense).declares(TrainsAlone):
        alone = [n for n in DEFENSES.list() if DEFENSES.get(n).declares(TrainsAlone)]
        targeted = [n for n in DEFENSES.list() if DEFENSES.get(n).declares(TrainsForTarget)]
        raise UsageError(f"--defense {args.defense} has nothing to train (trainable: {', '.join(targeted)} "
                         f"with --target-model; {', '.join(alone)})")
    factory = DEFENSES.get(args.defense).factory
    if args.epochs is not None and args.epochs <= 0:
        raise UsageError("--epochs must be positive")
    out = Path(args.out)
    probe_writable(out.parent if out.parent != Path("") else Path("."), "--out")
    with checkpointed(args, out):
        use = factory.train_to_file(out, dataset=args.dataset, split=args.split, data_dir=args.data_dir,
                                    epochs=args.epochs, seed=args.seed, device=pick_device(args.device),
                                    settings=parse_sets(args.set))
    if not is_quiet():
        print(f"wrote {out} (use: run --defense {args.defense} --set {use})")
    return 0


def train_defense(args) -> int:
    """``harness train --defense NAME --target-model M``: what a defense learns for the classifier M (a purifier),
    saved for ``--set NAME.checkpoint=``; the defense's class says how (``train_for_target``)."""
    from harness.assembly import load_model, pick_device
    from harness.writable import probe_writable
    from harness.config import Overrides, parse_sets
    from harness.core.capabilities import TrainsForTarget
    from harness.core.registry import DEFENSES

    entry = DEFENSES.get(args.defense)
    if not entry.declares(TrainsForTarget):
        return train_standalone(args)
    device = pick_device(args.device)
    out = Path(args.out)
    probe_writable(out.parent if out.parent != Path("") else Path("."), "--out")
    with checkpointed(args, out):
        use = entry.builds.train_for_target(
            args.defense, out, target=args.target_model, arch=args.arch, dataset=args.dataset, split=args.split,
            data_dir=args.data_dir, epochs=args.epochs, device=device, settings=parse_sets(args.set),
            load_target=lambda data: load_model(args.target_model, args.arch, data, Overrides([]), device,
                                                args.data_dir))
    if not is_quiet():
        print(f"wrote {out} (use: run {use})")
    return 0

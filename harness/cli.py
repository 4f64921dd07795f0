"""Command line: ``run``, ``list``, ``train``, ``check`` (contract in DESIGN.md), and ``certify``.

Exit codes: 0 success; 1 internal error; 2 bad input or usage (one line on stderr, nothing written);
3 ``check`` found a regression.  A traceback is printed only with ``--debug``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import sys
from pathlib import Path

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
                   help="defense name (repeatable; default none; 'harness list defenses')")
    r.add_argument("--attack", action="append", default=None,
                   help="attack name (repeatable; default pgd_linf; 'harness list attacks')")
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
        from harness.plugins import load_builtins

        load_builtins()
        if args.command == "list":
            return cmd_list(args)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "certify":
            from .certify import cmd_certify

            return cmd_certify(args, argv)
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
    except Exception as err:  # noqa: BLE001 - the contract: one line, exit 1, traceback only with --debug
        if debug:
            raise
        print(f"harness: internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def cmd_run(args, argv) -> int:
    import torch

    from harness.core.registry import ATTACKS, DATASETS, DEFENSES

    from .assembly import (
        build_defenses,
        build_plugins,
        check_model,
        check_writable,
        defense_context,
        describe,
        device_name,
        load_model,
        pick_device,
        require_positive,
        resolve_norm,
    )
    from .batching import probe_batch_size
    from .config import Overrides, RunConfig, parse_eps_list
    from .data import load
    from .evaluate import evaluate
    from .precision import FIDELITY_N, autocast_for, fidelity_check
    from .report import environment, write_report

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    overrides = Overrides(args.set)
    defense_names = args.defense or ["none"]
    attack_names = args.attack or ["pgd_linf"]
    attack_entries = [ATTACKS.get(a) for a in attack_names]
    for d in defense_names:
        DEFENSES.get(d)
    if args.model is not None:
        check_model(args.model, args.arch)
    require_positive(n=args.n, batch_size=None if args.batch_size == "auto" else args.batch_size, passes=args.passes)
    args.fidelity_n = FIDELITY_N if args.fidelity_n is None else args.fidelity_n
    if args.fidelity_n < 0:
        raise UsageError(f"--fidelity-n must be >= 0, got {args.fidelity_n}")
    norm = resolve_norm(args, attack_entries)
    data_kw = overrides.for_plugin(DATASETS, args.dataset)
    data = load(args.dataset, args.split or "test", args.data_dir, **data_kw) if data_kw else load(args.dataset, args.split or "test", args.data_dir)
    data = data.take(args.n)
    eps_list = parse_eps_list(args.eps) if args.eps is not None else [data.default_eps[norm]]
    eps = eps_list[0]
    device = pick_device(args.device)
    amp = autocast_for(args.precision, device)  # fp16 off CUDA: UsageError
    torch.manual_seed(args.seed)
    context = defense_context(args, data)
    defenses = build_defenses(defense_names, overrides, norm, eps_list, context)
    attacks = build_plugins(ATTACKS, attack_names, overrides, {"norm": norm, "eps": eps})
    for name, attack in attacks:
        if args.norm is not None and attack.norm != norm:
            raise UsageError(f"attack {name} works in {attack.norm}, but --norm {norm} was given")
    model, model_name = load_model(args.model, args.arch, data, overrides, device, args.quiet, args.data_dir)
    overrides.check_all_used()
    batch_size, batching = (probe_batch_size(model, data.x, data.y, device, amp) if args.batch_size == "auto"
                            else (args.batch_size or 500, None))
    cfg = RunConfig(dataset=args.dataset, model=model_name, arch=args.arch,
                    defenses=[{"name": n, **describe(d)} for n, d in defenses],
                    attacks=[{"name": n, **a.describe()} for n, a in attacks], norm=norm,
                    eps=eps if len(eps_list) == 1 else eps_list, n=len(data),
                    batch_size=batch_size, seed=args.seed, passes=args.passes, split=args.split or "test",
                    data_dir=args.data_dir, device=str(device), out=args.out, quiet=args.quiet,
                    extra={"set": sorted(args.set), **({"precision": args.precision} if amp else {})})  # fp32: hash as before
    config_hash = cfg.hash()
    out = Path(args.out or Path("runs") / config_hash)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    check_writable(out)
    results = evaluate(model, data, defenses, attacks, batch_size=batch_size, seed=args.seed, device=device,
                       passes=args.passes, quiet=args.quiet, eps=eps_list if len(eps_list) > 1 else None, amp=amp)
    fidelity, fid_warnings = fidelity_check(results, lambda m: evaluate(
        model, data.take(m), defenses, attacks, batch_size=batch_size, seed=args.seed, device=device, passes=args.passes,
        quiet=args.quiet, eps=eps_list if len(eps_list) > 1 else None), args.precision, len(data), args.fidelity_n)
    meta = {"dataset": args.dataset, "model": model_name, "seed": args.seed, "config_hash": config_hash, "note": data.note or data.name,
            **({"warnings": fid_warnings} if fid_warnings else {})}
    run_info = {"config": cfg.as_dict(), "config_hash": config_hash, "seed": args.seed, "argv": ["harness", *argv],
                "device": device_name(device), "data_note": data.note, "started": started,
                "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **environment(),
                "precision": args.precision, **({"fidelity": fidelity} if fidelity else {}),
                **({"batching": batching} if batching else {})}
    replaced = (out / "results.csv").exists()
    rows = write_report(out, results, data.y, meta, run_info, samples=not args.no_samples,
                        gradients={n: a.gradients for n, a in attacks if not a.certifies})
    if not args.quiet:
        from .report import to_markdown

        print(to_markdown(rows, meta).split("## All cells")[0].rstrip())
        files = "results.csv, results.md, timings.csv, run.json" + ("" if args.no_samples else ", samples.csv")
        print(f"\nwrote {out}/{files}" + (" (replacing the earlier run's files there)" if replaced else ""))
    return 0


def cmd_list(args) -> int:
    from harness.core.registry import REGISTRIES

    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        if kind not in REGISTRIES:
            raise UsageError(f"unknown kind {kind!r}; one of {', '.join(REGISTRIES)}")
        reg = REGISTRIES[kind]
        print(f"{kind}:")
        for name in reg.list(args.pattern):
            entry = reg.get(name)
            params = ", ".join(f"{path}: {_type_name(p)} = {p.part.name if p.part else repr(p.default)}"
                               for path, p in entry.tree())
            print(f"  {name:24s} {entry.description}")
            if params and kind != "zoo":
                print(f"  {'':24s}   params: {params}")
            if entry.paper:
                print(f"  {'':24s}   paper:  {', '.join(f'{k}={v}' for k, v in entry.paper.items())}")
    return 0


def _type_name(param) -> str:
    """A parameter's type as ``harness list`` shows it (``float``, ``int | None``, ``Literal['linf', 'l2']``)."""
    kind = param.type
    if kind is inspect.Parameter.empty:
        return type(param.default).__name__ if param.default is not None else "any"
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


def cmd_train(args) -> int:
    from harness.core.artifacts import atomic_save
    from harness.core.registry import RECIPES
    from harness.core.training import fit

    from .assembly import build_arch, check_writable, pick_device
    from .config import Overrides
    from .data import load
    from .models.checkpoint import load_checkpoint

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
    check_writable(out.parent if out.parent != Path("") else Path("."))
    model = fit(model.to(device), data.x, data.y, make_batch, epochs=args.epochs, lr=args.lr,
                batch_size=args.batch_size, seed=args.seed, quiet=args.quiet, desc=f"train {arch} ({args.recipe})")
    atomic_save(model.state_dict(), out)
    meta = {"arch": arch, "arch_kw": kw, "recipe": args.recipe, "set": args.set, "dataset": args.dataset,
            "split": args.split or "train", "epochs": args.epochs, "lr": args.lr, "seed": args.seed}
    Path(str(out) + ".json").write_text(json.dumps(meta, indent=2) + "\n")
    if not args.quiet:
        print(f"wrote {out} (load with --model {out} --arch {arch})")
    return 0


def train_standalone(args) -> int:
    """``harness train --defense NAME``: a defense that learns from clean data alone says how (``train_to_file``)."""
    from defenses.purifiers.training import METHODS
    from harness.core.defense import Defense
    from harness.core.registry import DEFENSES

    from .assembly import check_writable, pick_device
    from .config import parse_sets

    def trains_alone(name: str) -> bool:
        factory = DEFENSES.get(name).factory
        return isinstance(factory, type) and issubclass(factory, Defense) and factory.trains_alone

    if not trains_alone(args.defense):
        alone = [n for n in DEFENSES.list() if trains_alone(n)]
        raise UsageError(f"--defense {args.defense} has nothing to train (trainable: {', '.join(sorted(METHODS))} "
                         f"with --target-model; {', '.join(alone)})")
    factory = DEFENSES.get(args.defense).factory
    if args.epochs is not None and args.epochs <= 0:
        raise UsageError("--epochs must be positive")
    out = Path(args.out)
    check_writable(out.parent if out.parent != Path("") else Path("."))
    use = factory.train_to_file(out, dataset=args.dataset, split=args.split, data_dir=args.data_dir, epochs=args.epochs,
                                seed=args.seed, quiet=args.quiet, device=pick_device(args.device),
                                settings=parse_sets(args.set))
    if not args.quiet:
        print(f"wrote {out} (use: run --defense {args.defense} --set {use})")
    return 0


def train_defense(args) -> int:
    """``harness train --defense NAME --target-model M``: train a purifier for M, save it for ``--set checkpoint=``."""
    from defenses.purifiers.training import METHODS, parse_settings, standard_model, train_to_file, training_data
    from harness.core.registry import ZOO

    from .assembly import check_writable, load_model, pick_device
    from .config import Overrides, parse_sets
    from .data import load
    from .models.zoo import load_zoo

    if args.defense not in METHODS:
        return train_standalone(args)
    if args.epochs is not None and args.epochs <= 0:
        raise UsageError("--epochs must be positive")
    zoo_target = args.arch is None and args.target_model in ZOO
    split = args.split or (training_data(args.target_model, args.dataset)[1] if zoo_target else "train")
    data = load(args.dataset, split, args.data_dir)
    device = pick_device(args.device)
    settings = parse_settings(args.defense, parse_sets(args.set))
    if "train_eps" not in settings:  # as the defenses: the dataset's Linf budget, steps of a quarter of it
        settings["train_eps"] = float(data.default_eps["linf"])
        if "train_step_size" in METHODS[args.defense].defaults:
            settings.setdefault("train_step_size", settings["train_eps"] / 4)
    if "epochs" in settings:  # --set epochs=N is --epochs N
        if args.epochs is not None and args.epochs != settings["epochs"]:
            raise UsageError(f"--epochs {args.epochs} and --set epochs={settings['epochs']} disagree; give one")
        args.epochs = settings.pop("epochs")
    target, target_name = load_model(args.target_model, args.arch, data, Overrides([]), device, args.quiet, args.data_dir)
    out = Path(args.out)
    check_writable(out.parent if out.parent != Path("") else Path("."))
    feature = standard_model(args.dataset) if METHODS[args.defense].feature_net else None  # as the defense's default
    feature_model = load_zoo(feature, device, args.quiet, args.data_dir) if feature else None
    train_to_file(args.defense, target, data, out, epochs=args.epochs, feature_model=feature_model, quiet=args.quiet,
                  **settings)
    if not args.quiet:
        print(f"wrote {out} (use: run --model {target_name} --defense {args.defense} --set {args.defense}.checkpoint={out})")
    return 0


"""``harness run``: argv -> ``RunSpec`` -> ``build`` -> ``Results`` -> the run folder (docs/CONTRACTS.md).

The command line is a thin layer over the Python API: ``spec_from_args`` is its only work of its own.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.core.errors import UsageError

# Flags that say what the run is: with --from, the run is the file's, so none of them may be given.
SPEC_FLAGS = ("defense", "attack", "model", "arch", "model_arg", "weights", "normalize", "data", "dataset", "split",
              "data_dir", "n", "subset", "subset_seed", "indices", "scale", "resize", "crop", "norm", "eps", "seed",
              "precision", "batch_size", "passes", "fidelity_n", "set", "no_samples")


def spec_from_args(args):
    """The ``RunSpec`` of ``harness run``'s arguments (every name and --set value checked here)."""
    from harness.assembly import refuse_budget_sets
    from harness.build import plugin_specs
    from harness.config import Overrides, parse_eps_list, parse_instances
    from harness.core.registry import ATTACKS, DATASETS, DEFENSES, MODELS
    from harness.models.user import is_factory_ref, parse_model_args
    from harness.spec import DataRef, ModelRef, RunSpec

    if args.from_ is not None:
        return spec_from_file(args)
    overrides = Overrides(args.set)
    defenses = parse_instances(DEFENSES, args.defense or ["none"], "--defense")
    attacks = parse_instances(ATTACKS, args.attack or ["pgd_linf"], "--attack")
    refuse_budget_sets(overrides.raw, attacks)
    if args.model is not None and not is_factory_ref(args.model):
        from harness.assembly import check_model

        check_model(args.model, args.arch)
    data_name = args.data or args.dataset
    model = ModelRef(args.model, args.arch, tuple(sorted(parse_model_args(args.model_arg).items())), args.weights,
                     args.normalize, tuple(sorted(overrides.for_plugin(MODELS, args.arch).items())) if args.arch else ())
    data = DataRef(data_name, args.split, args.data_dir, args.n, args.subset, args.subset_seed, args.indices, args.scale,
                   args.resize, args.crop,
                   tuple(sorted(overrides.for_plugin(DATASETS, data_name).items())) if data_name in DATASETS else ())
    eps = tuple(parse_eps_list(",".join(args.eps))) if args.eps else None
    spec = RunSpec(model, data, plugin_specs(defenses, DEFENSES, overrides), plugin_specs(attacks, ATTACKS, overrides),
                   args.norm.lower() if args.norm else None, eps, args.seed, args.device, args.precision,
                   args.batch_size, args.passes, args.fidelity_n, not args.no_samples)
    overrides.check_all_used()
    if spec.norm is not None and spec.norm not in ("linf", "l2"):
        raise UsageError(f"--norm must be linf or l2, got {args.norm!r}")
    return spec


def spec_from_options(options: dict):
    """The ``RunSpec`` of ``harness run`` with ``options`` (flags by their argparse names; the rest at their
    defaults): how a grid cell becomes a run without an argv."""
    import argparse

    return spec_from_args(argparse.Namespace(**{**run_defaults(), **options}))


def run_defaults() -> dict:
    from .parser import build_parser

    return vars(build_parser().parse_args(["run"]))


def spec_from_file(args):
    """``--from runs/<hash>/run.json``: the run that file records (its ``spec``), on this machine's device."""
    from harness.spec import RunSpec

    defaults = run_defaults()
    given = [f for f in SPEC_FLAGS if getattr(args, f) != defaults[f]]
    if given:
        raise UsageError(f"--from takes the whole run from its run.json; --{given[0].replace('_', '-')} cannot be "
                         "given with it (only --out, --device, --quiet)")
    path = Path(args.from_)
    if not path.is_file():
        raise UsageError(f"--from {path}: no such file")
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"--from {path}: not a run.json ({type(e).__name__})") from None
    if not isinstance(info, dict) or "spec" not in info:
        raise UsageError(f"--from {path}: this run.json records no run spec (written before specs existed)")
    spec = RunSpec.from_dict(info["spec"])
    return spec.replace(device=args.device) if args.device != "auto" else spec


def cmd_run(args, argv) -> int:
    from harness.build import build
    from harness.core.progress import is_quiet

    spec = spec_from_args(args)
    check_out(Path(args.out or "runs"))  # before any work (the hash, and so the default folder, needs the build)
    run = build(spec)
    out = Path(args.out or Path("runs") / run.config_hash)
    results = run.execute(argv)
    replaced = (out / "results.csv").exists()
    results.save(out)
    if not is_quiet():
        print(results.table())
        files = "results.csv, results.md, timings.csv, run.json" + ("" if args.no_samples else ", samples.csv")
        print(f"\nwrote {out}/{files}" + (" (replacing the earlier run's files there)" if replaced else ""))
    return 0


def check_out(out: Path) -> None:
    """``--out`` is a folder this process can write into: tried by a write, before any work."""
    from harness.writable import probe_writable

    probe_writable(out)

"""``harness run``: evaluate defenses against attacks and write the report (DESIGN.md, the CLI contract)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from harness.core.errors import UsageError


def cmd_run(args, argv) -> int:
    import torch

    from harness.assembly import (
        build_attacks,
        build_defenses,
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
    from harness.batching import probe_batch_size
    from harness.config import Overrides, RunConfig, parse_eps_list, parse_instances
    from harness.core.budget import Budget
    from harness.core.registry import ATTACKS, DATASETS, DEFENSES
    from harness.data import load
    from harness.evaluate import evaluate
    from harness.precision import FIDELITY_N, autocast_for, fidelity_check
    from harness.report import environment, write_report

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    overrides = Overrides(args.set)
    defense_names = parse_instances(DEFENSES, args.defense or ["none"], "--defense")
    attack_names = parse_instances(ATTACKS, args.attack or ["pgd_linf"], "--attack")
    attack_entries = [ATTACKS.get(name) for _, name in attack_names]
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
    attacks = build_attacks(attack_names, overrides, Budget(norm, eps))
    model, model_name = load_model(args.model, args.arch, data, overrides, device, args.quiet, args.data_dir)
    overrides.check_all_used()
    batch_size, batching = (probe_batch_size(model, data.x, data.y, device, amp) if args.batch_size == "auto"
                            else (args.batch_size or 500, None))
    cfg = RunConfig(dataset=args.dataset, model=model_name, arch=args.arch,
                    defenses=[{"name": n, **describe(d)} for n, d in defenses],
                    attacks=[{"name": n, **a.describe(Budget(norm, eps))} for n, a in attacks], norm=norm,
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
        from harness.report import to_markdown

        print(to_markdown(rows, meta).split("## All cells")[0].rstrip())
        files = "results.csv, results.md, timings.csv, run.json" + ("" if args.no_samples else ", samples.csv")
        print(f"\nwrote {out}/{files}" + (" (replacing the earlier run's files there)" if replaced else ""))
    return 0

"""Engine units: registry, config hash, metrics, data range checks, verdicts."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binomtest

from harness.config import Overrides, parse_eps
from harness.core.budget import Budget
from harness.core.errors import DataError, UsageError
from harness.core.registry import ATTACKS, Registry
from harness.data.base import ImageSet
from harness.metrics import clopper_pearson
from harness.plugins import load_builtins

load_builtins()


def test_registry_register_create_list_and_suggest():
    reg = Registry("things")

    @reg.register("alpha_one", "first thing")
    def alpha_one(size: int = 3, rate: float = 0.5):
        return {"size": size, "rate": rate}

    assert reg.create("alpha_one", size=4) == {"size": 4, "rate": 0.5}
    assert reg.list("alpha*") == ["alpha_one"]
    assert reg.get("alpha_one").params["rate"].parse("1/4") == 0.25
    with pytest.raises(UsageError, match="did you mean alpha_one"):
        reg.get("alpha_on")
    with pytest.raises(UsageError, match="no parameter"):
        reg.create("alpha_one", colour="red")


def test_overrides_scoped_and_global():
    o = Overrides(["steps=7", "fgsm.loss=cw"])
    assert o.for_plugin(ATTACKS, "pgd_linf") == {"steps": 7}
    assert o.for_plugin(ATTACKS, "fgsm") == {"loss": "cw"}
    o.check_all_used()
    with pytest.raises(UsageError):
        Overrides(["loss=xx"]).for_plugin(ATTACKS, "pgd_linf")


def test_unscoped_key_across_plugin_kinds_is_ambiguous():

    reg = Registry("defenses")
    reg.register("toy")(lambda steps=3: None)
    o = Overrides(["steps=5"])
    assert o.for_plugin(ATTACKS, "pgd_linf") == {"steps": 5}
    with pytest.raises(UsageError, match="scope it"):
        o.for_plugin(reg, "toy")


def test_parse_eps():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    for bad in ("-1", "nan", "inf", "x"):
        with pytest.raises(UsageError):
            parse_eps(bad)


def test_config_hash_ignores_output_only_settings():
    from harness.build import config_hash
    from harness.spec import RunSpec

    a, b = RunSpec(eps=(0.1,), device="cpu"), RunSpec(eps=(0.1,), device="cuda", samples=False, fidelity_n=5)
    assert config_hash(a, "m", "d") == config_hash(b, "m", "d")
    assert config_hash(RunSpec(eps=(0.2,)), "m", "d") != config_hash(a, "m", "d")
    assert config_hash(a, "other weights", "d") != config_hash(a, "m", "d") != config_hash(a, "m", "other data")


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (57, 120)])
def test_clopper_pearson_matches_scipy(k, n):
    lo, hi = clopper_pearson(k, n)
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_clopper_pearson_prints_the_numbers_of_scipys_beta_quantiles():
    """The interval comes from a bisection-Newton quantile of the regularized incomplete beta (no scipy.stats at
    start-up): within 1e-12 of ``scipy.stats.beta.ppf`` and the same percentages to the printed two decimals."""
    from scipy.stats import beta

    for n in (1, 2, 7, 10, 100, 120, 360, 1000, 1797, 10_000, 100_000):
        for k in sorted({0, 1, 2, n // 3, n // 2, n - 2, n - 1, n} & set(range(n + 1))):
            lo, hi = clopper_pearson(k, n)
            ref_lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
            ref_hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
            assert abs(lo - ref_lo) < 1e-12 and abs(hi - ref_hi) < 1e-12, (k, n)
            assert (f"{100 * lo:.2f}", f"{100 * hi:.2f}") == (f"{100 * ref_lo:.2f}", f"{100 * ref_hi:.2f}")
    for k in range(361):  # every count of the digits test set
        lo, hi = clopper_pearson(k, 360)
        ref = binomtest(k, 360).proportion_ci(confidence_level=0.95, method="exact")
        assert (f"{100 * lo:.2f}", f"{100 * hi:.2f}") == (f"{100 * ref.low:.2f}", f"{100 * ref.high:.2f}")


def test_the_shipped_digits_are_scikit_learns_and_read_once(tmp_path):
    """harness/data/digits.npz holds scikit-learn's images, labels and the documented split, exactly (so a run needs
    no scikit-learn); both splits come from one read, and a damaged file is a DataError, not other numbers."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from harness.data import digits as module

    fresh = module.from_sklearn()
    assert module.digest(fresh) == module.SHA256  # the file is what scikit-learn gives today
    bunch = load_digits()
    idx = dict(zip(("train", "test"), train_test_split(np.arange(1797), test_size=0.2, random_state=0,
                                                       stratify=bunch.target)))
    module.digits_arrays.cache_clear()
    for split in ("train", "test"):
        data = module.digits(split)
        assert np.array_equal(data.x.numpy(), (bunch.images.astype(np.float32) / 16.0)[:, None][idx[split]])
        assert data.y.dtype == torch.int64 and np.array_equal(data.y.numpy(), bunch.target[idx[split]])
    assert module.digits_arrays.cache_info().misses == 1  # both splits from one read
    edited = {**fresh, "target": np.roll(fresh["target"], 1)}
    np.savez_compressed(tmp_path / "digits.npz", **edited)
    with pytest.raises(DataError, match="damaged or edited"):
        module.digits_arrays(tmp_path / "digits.npz")
    (tmp_path / "broken.npz").write_bytes(b"broken")
    with pytest.raises(DataError, match="cannot be read"):
        module.digits_arrays(tmp_path / "broken.npz")
    with pytest.raises(DataError, match="unknown split"):
        module.digits("validation")


def test_imageset_rejects_out_of_range_and_nan():
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ImageSet(torch.full((2, 1, 4, 4), 1.5), y, ("a",), "t")
    with pytest.raises(DataError, match="NaN"):
        ImageSet(torch.full((2, 1, 4, 4), math.nan), y, ("a",), "t")


def test_digits_split_is_fixed(digits_test):
    from harness.data import load

    assert len(digits_test) == 360 and len(load("digits", "train")) == 1437
    assert digits_test.y[:10].tolist() == [7, 6, 3, 7, 7, 3, 2, 8, 9, 3]
    assert float(digits_test.x.min()) >= 0 and float(digits_test.x.max()) <= 1


def test_param_parse_optional_literal():
    from typing import Literal, Optional

    from harness.core.registry import Param

    p = Param("norm", Optional[Literal["linf", "l2"]], None)
    assert p.parse("l2") == "l2" and p.parse("none") is None
    with pytest.raises(UsageError):
        p.parse("l3")


def test_zoo_training_ignores_the_callers_rng_and_threads(tmp_path, monkeypatch):
    """Cached weights must be the same whoever trains them first (seeded init, pinned threads)."""
    from harness.models import zoo

    weights = []
    for i, threads in enumerate((1, 2)):
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / str(i)))
        torch.manual_seed(100 + i)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            state = torch.random.get_rng_state()
            weights.append(zoo.load_zoo("digits_cnn").state_dict())
            assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
        finally:
            torch.set_num_threads(before)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_zoo_entry_on_data_that_is_not_embedded(tmp_path, monkeypatch, shared_data):
    """An MNIST zoo entry trains from --data-dir (its absence is a one-line DataError), then loads from the cache."""
    from harness.cli import main
    from harness.core.registry import ZOO
    from harness.models import zoo

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    zoo.zoo_entry("mnist_tiny_test", "a tiny MNIST entry (this test only)", zoo.ZooSpec(
        "mnist", "small_cnn", "standard", epochs=1, arch_kw={"image_size": 28, "width": 4}, split="test-holdout"))
    monkeypatch.setitem(ZOO._entries, "mnist_tiny_test", ZOO._entries.pop("mnist_tiny_test"))  # removed afterwards
    with pytest.raises(DataError, match="no data directory"):
        zoo.load_zoo("mnist_tiny_test")
    model = zoo.load_zoo("mnist_tiny_test", data_dir=str(shared_data))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert len(list((tmp_path / "cache").glob("mnist_tiny_test-*.pt"))) == 1
    out = tmp_path / "run"
    assert main(["run", "--dataset", "mnist", "--split", "test-holdout", "--data-dir", str(shared_data), "--model",
                 "mnist_tiny_test", "--attack", "fgsm", "--eps", "0.1", "--n", "8", "--out", str(out), "--quiet"]) == 0
    assert (out / "results.csv").is_file()


def test_eps_ramp_warms_the_budget_up_linearly():
    from harness.core.training import eps_ramp

    ramp = eps_ramp(0.3, 3)
    assert [round(ramp(), 6) for _ in range(5)] == [0.1, 0.2, 0.3, 0.3, 0.3]
    flat = eps_ramp(0.3, 0)
    assert [flat() for _ in range(3)] == [0.3] * 3


def test_third_party_plugin_through_entry_points(tmp_path, monkeypatch):
    """A package that declares ``[harness.attacks] name = module:Class`` is found without touching the harness."""
    (tmp_path / "thirdparty_attack.py").write_text(
        "from harness.core.attack import Attack\n"
        "class Nudge(Attack):\n"
        "    '''shifts every pixel by eps'''\n"
        "    def __init__(self, shift: float = 1.0):\n"
        "        self.shift = shift\n"
        "    def perturb(self, model, x, y, budget, context=None):\n"
        "        return (x + self.shift * budget.eps).clamp(0, 1)\n")
    dist = tmp_path / "thirdparty_attack-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-attack\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness.attacks]\nnudge = thirdparty_attack:Nudge\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("attacks")
    assert "nudge" in reg.list()
    assert reg.get("nudge").params["shift"].parse("0.5") == 0.5
    nudge = reg.create("nudge", shift=0.5)
    assert torch.allclose(nudge.perturb(None, torch.zeros(2), None, Budget("linf", 0.1)), torch.full((2,), 0.05))


def test_a_module_entry_point_registers_its_names_when_a_name_is_not_declared(tmp_path, monkeypatch):
    """``[harness.attacks] my_attacks = "my_package.attacks"``: a module that registers any names on import is
    imported when a name no entry point declares is asked for (and by ``list``), then checked like the others."""
    import harness.core.registry

    (tmp_path / "thirdparty_bulk.py").write_text(
        "from harness.core.attack import Attack\n"
        "from harness.core.registry import ATTACKS\n"
        "@ATTACKS.register('wiggle', 'moves nothing')\n"
        "class Wiggle(Attack):\n"
        "    def __init__(self, norm: str = 'linf', eps: float = 0.0):\n"
        "        self.set_budget(norm, eps)\n")
    dist = tmp_path / "thirdparty_bulk-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-bulk\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness.attacks]\nbulk_attacks = thirdparty_bulk\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("attacks")
    monkeypatch.setattr(harness.core.registry, "ATTACKS", reg)  # the module registers in this registry
    reg.check("pgd_linf")  # declared by name: nothing imported
    assert "wiggle" not in reg._entries
    with pytest.raises(UsageError, match="did you mean wiggle"):
        reg.check("wigle")
    assert reg.get("wiggle").description == "moves nothing"


def test_a_broken_or_stale_entry_point_is_named(tmp_path, monkeypatch):
    """An entry point whose module fails to import is an ImportError naming the plugin; one whose module does not
    register its name (metadata older than the code) says so instead of a KeyError."""
    (tmp_path / "thirdparty_empty.py").write_text("X = 1\n")
    dist = tmp_path / "thirdparty_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness.things]\nbroken = thirdparty_nowhere:Thing\n"
                                           "ghost = thirdparty_empty\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("things")
    with pytest.raises(ImportError, match=r"plugin 'broken' \(harness.things: thirdparty_nowhere:Thing\)"):
        reg.get("broken")
    with pytest.raises(UsageError, match="registered no thing 'ghost': stale metadata"):
        reg.get("ghost")
    with pytest.raises(UsageError, match="unknown thing 'gost'; did you mean ghost"):
        reg.get("gost")


def test_a_misspelt_name_is_refused_before_any_plugin_or_torch_is_imported():
    """Names are checked against the entry points first: exit 2, one line with the closest names, and neither a plugin
    package nor torch imported (the cost of a typo is the interpreter's start, not the harness's)."""
    import subprocess
    import sys

    code = ("import sys\nfrom harness.cli import main\n"
            "rc = main(['run', '--defense', 'none', '--attack', 'pgd_lnf', '--n', '10', '--quiet'])\n"
            "print(rc, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'attacks', 'defenses', 'scipy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "[]"]
    assert out.stderr.splitlines() == ["harness: error: unknown attack 'pgd_lnf'; did you mean pgd_linf, pgd_l2, pgd?"]
    run = subprocess.run([sys.executable, "-m", "harness", "run", "--defense", "nonee", "--quiet"], capture_output=True,
                         text=True)
    assert (run.returncode, run.stdout) == (2, "") and len(run.stderr.splitlines()) == 1 and "none" in run.stderr


def test_a_missing_attack_library_is_one_line_naming_its_install_command(tmp_path):
    """torchattacks is not a dependency (its metadata pins torchvision): without it a ``ta.`` attack is a usage error
    that says how to install it, and the rest of the harness works."""
    import subprocess
    import sys

    code = ("import sys\nsys.modules['torchattacks'] = None  # as if not installed\nfrom harness.cli import main\n"
            f"sys.exit(main(['run', '--attack', 'ta.PGD', '--n', '2', '--quiet', '--out', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert len(out.stderr.splitlines()) == 1 and "pip install --no-deps torchattacks==3.5.1" in out.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_parts_compose_and_are_reached_by_path():
    """Composition (issue 12): preempt_smooth holds a ``smoothing``; its parameters by path, no flattened copies."""
    from harness.config import Overrides
    from harness.core.errors import UsageError
    from harness.core.registry import DEFENSES
    from harness.plugins import load_builtins

    load_builtins()
    entry = DEFENSES.get("preempt_smooth")
    assert "sigma" not in entry.params and entry.param("smoothing.sigma").default == 0.25
    over = Overrides(["preempt_smooth.smoothing.sigma=0.5", "preempt_smooth.maxiter=3", "smoothing.n=7"])
    kw = over.for_plugin(DEFENSES, "preempt_smooth")
    assert kw == {"smoothing.sigma": 0.5, "maxiter": 3}  # smoothing.n scopes the smoothing plugin, not the part
    d = DEFENSES.create("preempt_smooth", **kw)
    assert (d.smoothing.sigma, d.smoothing.n, d.maxiter) == (0.5, 100, 3)
    assert d.describe()["smoothing"]["sigma"] == 0.5  # run.json and the config hash see the part's parameters
    assert d.certifying_part() is d.smoothing and DEFENSES.create("smoothing").certifying_part().sigma == 0.25
    with pytest.raises(UsageError, match="sigmaa"):
        DEFENSES.create("preempt_smooth", **{"smoothing.sigmaa": 1.0})
    with pytest.raises(UsageError, match="no part"):
        DEFENSES.create("preempt_smooth", **{"maxiter.x": 1})
    with pytest.raises(UsageError, match="given built"):
        DEFENSES.create("preempt_smooth", smoothing=d.smoothing, **{"smoothing.n": 3})


def test_a_part_chosen_on_the_command_line_takes_its_own_parameters():
    """``--set bpda.inner=ta.CW --set bpda.inner.c=10``: the paths under a part follow the plugin chosen for it."""
    from harness.config import Overrides
    from harness.core.errors import UsageError
    from harness.core.registry import ATTACKS
    from harness.plugins import load_builtins

    load_builtins()
    over = Overrides(["bpda.inner=ta.CW", "bpda.inner.c=10", "bpda.inner.lr=0.05"])
    kw = over.for_plugin(ATTACKS, "bpda")
    assert kw == {"inner": "ta.CW", "inner.c": 10.0, "inner.lr": 0.05}
    attack = ATTACKS.create("bpda", **kw)
    assert attack.describe()["inner"]["param.c"] == 10.0 and attack.describe(Budget("l2", 1.0))["inner"]["eps"] == 1.0
    with pytest.raises(UsageError, match="did you mean"):
        Overrides(["bpda.inner=ta.CWW"]).for_plugin(ATTACKS, "bpda")
    assert Overrides(["bpda.inner.c=10"]).for_plugin(ATTACKS, "bpda") == {}  # PGD, the default part, has no c


def test_the_registry_writes_nothing_onto_what_it_builds():
    """A run keeps its (label, name) pairs itself; a built plugin holds only its own parameters, and parts are
    described under their registered names without an attribute saying so."""
    from harness.core.registry import DEFENSES

    load_builtins()
    for obj in (ATTACKS.create("pgd_linf"), ATTACKS.create("bpda"), DEFENSES.create("preempt"),
                DEFENSES.create("safe_spot_ood", calib_n=10)):
        assert not {"registry_name", "_registry_kwargs"} & set(vars(obj)), type(obj).__name__
    bpda = ATTACKS.create("bpda", inner="pgd_l2")
    assert bpda.describe(Budget("l2", 0.5))["inner"]["registry_name"] == "pgd_l2"
    assert DEFENSES.create("preempt").describe()["registry_name"] == "preempt"


def test_a_defense_receives_the_run_facts_it_declares():
    """``RunContext`` reaches the parameters a defense declares in ``receives`` (dataset, data_dir, target),
    never another parameter that happens to share a name; an unknown target (no zoo model) leaves the default."""
    from harness.assembly import build_defenses
    from harness.core.defense import RunContext
    from harness.core.registry import DEFENSES

    load_builtins()
    ctx = RunContext(dataset="digits", data_dir=None, target=None)
    assert ctx.for_defense(("dataset", "target")) == {"dataset": "digits"}
    assert DEFENSES.get("hgd").declared("receives") == ("dataset", "data_dir", "target")
    assert DEFENSES.get("preempt").declared("receives") == ()
    [(_, entrant)] = build_defenses([("msp", "msp_detector")], Overrides(["msp.calib_n=10"]), "linf", [0.1], ctx)
    assert (entrant.at(Budget("linf", 0.1)).dataset, entrant.per_budget) == ("digits", False)
    [(_, pre)] = build_defenses([("preempt", "preempt")], Overrides([]), "linf", [0.05, 0.1], ctx)
    assert pre.per_budget and [d.delta for d, _ in pre.served()] == [0.05, 0.1]  # delta = eps, per budget
    [(_, fixed)] = build_defenses([("preempt", "preempt")], Overrides(["preempt.delta=0.2", "preempt.eps=0.1"]),
                                  "linf", [0.05, 0.1], ctx)
    assert not fixed.per_budget and [d.delta for d, _ in fixed.served()] == [0.2]  # one object for both budgets


def test_the_purifier_methods_live_in_the_core_registry():
    """No table beside the core registry: each purifier's training method registers in ``PURIFIERS`` (harness list
    purifiers, entry point group harness.purifiers), and ``METHODS`` reads it."""
    from defenses.purifiers.methods import METHODS, get_method
    from harness.core.registry import PURIFIERS, REGISTRIES

    load_builtins()
    assert REGISTRIES["purifiers"] is PURIFIERS and {"hgd", "nrp", "jatp", "magnet"} <= set(PURIFIERS.list())
    assert sorted(METHODS) == PURIFIERS.list() and METHODS["nrp"] is get_method("nrp") and METHODS["nrp"].feature_net
    with pytest.raises(UsageError, match="did you mean hgd"):
        get_method("hgdd")


def test_the_engine_asks_the_defense_which_threat_models_apply():
    """No kind strings in the threat resolution: ``default_threat`` and ``threat_for`` of the defense decide."""
    from harness.core.defense import Defense, Detector, Preemptive, Preprocessor, Wrapper
    from harness.core.registry import DEFENSES
    from harness.threat import resolve_threat

    load_builtins()
    pgd, obl = ATTACKS.create("pgd_linf"), ATTACKS.create("pgd_linf", threat="oblivious")
    none, preempt, quant = DEFENSES.create("none"), DEFENSES.create("preempt"), DEFENSES.create("quantize")
    assert [resolve_threat(d, pgd) for d in (none, preempt, quant)] == ["white-box", "grey-box", "white-box"]
    assert resolve_threat(none, obl) == "white-box"  # with no defense, knowing the defense changes nothing
    assert resolve_threat(quant, obl) == "oblivious"
    with pytest.raises(UsageError, match="does not apply to the preemptive defense"):
        resolve_threat(preempt, obl)
    assert resolve_threat(preempt, ATTACKS.create("adaptive_linf")) == "white-box"
    assert [k.rejects for k in (Defense, Preemptive, Preprocessor, Wrapper, Detector)] == [False] * 4 + [True]

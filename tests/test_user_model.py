"""Your own model (issue 22, items 3 and 8): factory references, --model-arg values, checkpoints in the usual
training-script / RobustBench layouts, and the outside normaliser."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from harness.core.errors import UsageError
from harness.models.user import is_factory_ref, load_factory, parse_model_args

FACTORY = """
import torch
from torch import nn
from blocks import Body   # a sibling module: the file's folder is on sys.path while it is imported

class Net(nn.Module):
    def __init__(self, width=4, classes=10):
        super().__init__()
        self.body = Body(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.body(x))

def build(width=4, classes=10, scale=1.0):
    torch.manual_seed(0)
    net = Net(width, classes)
    net.scale = scale
    return net.train()

def broken(**kw):
    raise RuntimeError("weights missing\\nsecond line")

def exits():
    raise SystemExit(3)

def not_a_model():
    return {"net": 1}

CONFIG = {"width": 4}
"""

BLOCKS = """
from torch import nn

class Body(nn.Sequential):
    def __init__(self, width):
        super().__init__(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
"""


@pytest.fixture
def user_file(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "model.py").write_text(FACTORY)
    (folder / "blocks.py").write_text(BLOCKS)
    return folder / "model.py"


@pytest.mark.parametrize("text", ["model.py:build", "path/to/file.py:factory", "C:\\src\\net.py:build",
                                  "pkg.module:factory", "timm:create_model", "torch.nn:Linear", "pkg:Cls.create"])
def test_factory_refs(text):
    assert is_factory_ref(text)


@pytest.mark.parametrize("text", ["digits_cnn", "runs/model.pt", "C:\\models\\net.pt", "C:net", "model.py",
                                  "model.py:", ":build", "http://host/model.pt", "pkg.module:9lives",
                                  "my-pkg:build", "./model.pt:latest"])
def test_not_factory_refs(text):
    assert not is_factory_ref(text)


def test_an_existing_file_is_not_a_ref(tmp_path, monkeypatch):
    assert not is_factory_ref(None) and not is_factory_ref("")
    monkeypatch.chdir(tmp_path)
    assert is_factory_ref("ckpt:v2.pt")
    (tmp_path / "ckpt:v2.pt").write_bytes(b"")
    assert not is_factory_ref("ckpt:v2.pt")


def test_file_factory_with_kwargs_and_sibling_import(user_file):
    path_before = list(sys.path)
    model = load_factory(f"{user_file}:build", {"width": 6, "classes": 3, "scale": 0.5})
    assert isinstance(model, nn.Module) and not model.training  # returned in eval mode
    assert model.head.out_features == 3 and model.scale == 0.5
    assert type(model).__module__.startswith("harness_user_model_")
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 3)
    assert sys.path == path_before  # the file's folder was on sys.path only while importing and building


def test_sibling_modules_of_two_projects_do_not_clash(user_file, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "blocks.py").write_text("from torch import nn\nclass Body(nn.Identity):\n    pass\n")
    (other / "model.py").write_text("from blocks import Body\ndef build():\n    return Body()\n")
    first = load_factory(f"{user_file}:build", {})
    second = load_factory(f"{other / 'model.py'}:build", {})
    assert isinstance(first.body, nn.Sequential) and type(second).__name__ == "Body"
    assert type(second).__module__ == "blocks" and "blocks" not in sys.modules


def test_same_factory_twice_builds_equal_models(user_file):
    a, b = load_factory(f"{user_file}:build", {}), load_factory(f"{user_file}:build", {})
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(a(x), b(x))


def test_module_factory_from_the_current_directory(tmp_path, monkeypatch):
    pkg = tmp_path / "mymodels_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("from torch import nn\ndef make(n=2):\n    return nn.Linear(3, n)\n")
    monkeypatch.chdir(tmp_path)
    try:
        model = load_factory("mymodels_pkg.nets:make", {"n": 5})
        assert isinstance(model, nn.Linear) and model.out_features == 5
    finally:
        for name in ("mymodels_pkg", "mymodels_pkg.nets"):
            sys.modules.pop(name, None)


def test_installed_package_factory():
    model = load_factory("torch.nn:Linear", {"in_features": 3, "out_features": 2})  # like timm:create_model
    assert isinstance(model, nn.Linear) and model.out_features == 2


def _error(ref, kwargs=None) -> str:
    with pytest.raises(UsageError) as err:
        load_factory(ref, kwargs or {})
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    assert _error(f"{tmp_path}/nope.py:build") == f"model file {tmp_path}/nope.py not found"


def test_file_that_fails_to_import(tmp_path):
    (tmp_path / "bad.py").write_text("import torch\ndef build(:\n    pass\n")
    assert _error(f"{tmp_path}/bad.py:build").startswith(
        f"model file {tmp_path}/bad.py failed to import: SyntaxError: ")
    (tmp_path / "lonely.py").write_text("from no_such_sibling_xyz import Net\n")
    assert _error(f"{tmp_path}/lonely.py:build") == (
        f"model file {tmp_path}/lonely.py failed to import: ModuleNotFoundError: No module named 'no_such_sibling_xyz'")
    (tmp_path / "script.py").write_text("import sys\nsys.exit(2)\n")
    assert "called sys.exit(2) on import; put its script code under if __name__ == '__main__':" in \
        _error(f"{tmp_path}/script.py:build")
    assert not [m for m in sys.modules if m.startswith(("harness_user_bad_", "harness_user_lonely_"))]


def test_module_that_fails_to_import():
    assert _error("no_such_package_xyz.models:build") == (
        "module no_such_package_xyz.models failed to import: ModuleNotFoundError: No module named "
        "'no_such_package_xyz' (is it installed in this Python environment?)")


def test_missing_attribute_lists_callables(user_file):
    msg = _error(f"{user_file}:biuld")
    assert msg.startswith(f"{user_file} has no 'biuld'; callables there: Net, build, broken, exits, not_a_model")
    assert "CONFIG" not in msg and "torch" not in msg


def test_not_callable_raises_and_wrong_return(user_file):
    assert _error(f"{user_file}:CONFIG") == (
        f"{user_file}:CONFIG: CONFIG is a dict, not a callable that returns an nn.Module")
    assert _error(f"{user_file}:broken", {"depth": 3}) == (
        f"model factory {user_file}:broken raised RuntimeError: weights missing when called with depth=3")
    assert _error(f"{user_file}:build", {"depht": 3}).startswith(
        f"model factory {user_file}:build raised TypeError: build() got an unexpected keyword argument 'depht'")
    assert _error(f"{user_file}:exits") == f"model factory {user_file}:exits raised SystemExit: 3 when called"
    assert _error(f"{user_file}:not_a_model") == (
        f"model factory {user_file}:not_a_model returned a dict, not a torch.nn.Module")


def test_not_a_ref():
    assert "not a factory reference" in _error("digits_cnn")


def test_model_args_are_literals():
    args = parse_model_args(["model_name=resnet18", "pretrained=false", "num_classes=10", "drop=0.1",
                             "eps=8/255", "head=none", "widths=(16,32)", "dims=[1,2]", "tags=a,b",
                             "name='10'", "path=/data/x.pt", "empty="])
    assert args == {"model_name": "resnet18", "pretrained": False, "num_classes": 10, "drop": 0.1, "eps": 8 / 255,
                    "head": None, "widths": (16, 32), "dims": [1, 2], "tags": ("a", "b"), "name": "10",
                    "path": "/data/x.pt", "empty": ""}
    assert type(args["num_classes"]) is int
    assert parse_model_args([]) == {} and parse_model_args(None) == {}


@pytest.mark.parametrize("pair, match", [
    ("depth", r"^--model-arg expects key=value with value 3, 0.5, 8/255, true, false, none, a,b or \(a,b\) or "
              r"\[a,b\], or text; got 'depth'$"),
    ("=3", "expects key=value"),
    ("my-key=3", "expects key=value"),
    ("sizes=1,,2", r"^--model-arg sizes: item 2 is empty in '1,,2'; expected key=value"),
])
def test_bad_model_args(pair, match):
    with pytest.raises(UsageError, match=match) as err:
        parse_model_args([pair])
    assert "\n" not in str(err.value)


def test_model_arg_given_twice():
    with pytest.raises(UsageError, match="--model-arg depth is given twice"):
        parse_model_args(["depth=1", "depth=2"])


# --- checkpoints of your own model: load_weights, the outside normaliser -------------------------------------

from harness.models.checkpoint import load_weights  # noqa: E402
from harness.models.normalize import NormalizedModel, parse_normalize  # noqa: E402

CIFAR = "mean=0.4914,0.4822,0.4465,std=0.2471,0.2435,0.2616"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


class SmallNet(nn.Module):
    """A network trained on normalised inputs, without its normaliser (as RobustBench and training scripts keep it)."""

    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.classifier = nn.Linear(32, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class TrainingWrapper(nn.Module):
    """The original: the training script's normaliser in front of the network (its stats are not in the file)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(STD).view(1, 3, 1, 1)

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def _trained_net(seed=0) -> SmallNet:
    torch.manual_seed(seed)
    net = SmallNet().train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial BatchNorm running statistics
            net(torch.randn(8, 3, 8, 8) * 2 + 1)
    return net.eval()


def _save(obj, tmp_path, name="ckpt.pt") -> str:
    torch.save(obj, tmp_path / name)
    return str(tmp_path / name)


def test_robustbench_layout_gives_the_original_logits(tmp_path):
    source = _trained_net()
    original = TrainingWrapper(source).eval()
    path = _save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 99}, tmp_path)
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        want = original(x)
        torch.manual_seed(1)
        mean, std = parse_normalize(CIFAR)
        loaded = NormalizedModel(load_weights(SmallNet().train(), path), mean, std)
        assert not loaded.training and not loaded.model.training
        assert torch.equal(loaded(x), want)
        torch.manual_seed(2)  # the same, loading into the wrapped network
        wrapped = load_weights(NormalizedModel(SmallNet(), mean, std), path)
        assert torch.equal(wrapped(x), want)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model", "net"])
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_wrappers_and_prefixes(tmp_path, key, prefix):
    source = _trained_net()
    path = _save({key: {prefix + k: v for k, v in source.state_dict().items()}}, tmp_path)
    loaded = load_weights(_trained_net(seed=5), path)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def _normalising_wrapper_state(net, mean=MEAN, std=STD, names=("normalize.mean", "normalize.std"), prefix="module."):
    sd = {f"{prefix}model.{k}": v for k, v in net.state_dict().items()}
    sd[prefix + names[0]] = torch.tensor(mean).view(1, 3, 1, 1)
    sd[prefix + names[1]] = torch.tensor(std).view(1, 3, 1, 1)
    return {"state_dict": sd}


def test_dataparallel_normalising_wrapper_loads_into_the_outside_normaliser(tmp_path):
    # module.normalize.{mean,std} beside module.model.<keys>: failed before, as "module." alone fit no key.
    source = _trained_net()
    path = _save(_normalising_wrapper_state(source), tmp_path)
    loaded = load_weights(NormalizedModel(SmallNet(), MEAN, STD), path)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), TrainingWrapper(source)(x))
    sigma = _save(_normalising_wrapper_state(source, names=("mu", "sigma"), prefix=""), tmp_path, "mu.pt")
    load_weights(NormalizedModel(SmallNet(), MEAN, STD), sigma)


def test_stats_in_the_file_must_match_the_normaliser(tmp_path):
    path = _save(_normalising_wrapper_state(_trained_net(), mean=(0.5, 0.5, 0.5)), tmp_path)
    with pytest.raises(UsageError) as err:
        load_weights(NormalizedModel(SmallNet(), MEAN, STD), path)
    assert str(err.value) == (f"checkpoint {path} normalises inputs with mean=0.5,0.5,0.5 but model NormalizedModel "
                              "uses mean=0.4914,0.4822,0.4465; set the model's mean to the checkpoint's")


def test_stats_in_the_file_without_a_normaliser_say_what_to_pass(tmp_path):
    path = _save(_normalising_wrapper_state(_trained_net()), tmp_path)
    with pytest.raises(UsageError) as err:
        load_weights(SmallNet(), path, "my net")
    assert str(err.value) == (f"checkpoint {path} normalises inputs (module.normalize.mean, module.normalize.std) "
                              f"but my net has no normaliser; give it with --normalize {CIFAR}")


def test_stats_the_network_holds_itself(tmp_path):
    class WithMu(SmallNet):  # RobustBench's Hendrycks2020AugMix*: persistent mu/sigma buffers, part of the weights
        def __init__(self):
            super().__init__()
            self.register_buffer("mu", torch.full((1, 3, 1, 1), 0.5))
            self.register_buffer("sigma", torch.full((1, 3, 1, 1), 0.25))

    source = WithMu()
    source.mu.fill_(0.4)
    loaded = load_weights(WithMu(), _save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
                                           tmp_path))
    assert torch.equal(loaded.mu, source.mu)

    class PlainStats(SmallNet):  # DMWideResNet-style: mean/std kept as plain tensors, not in the state dict
        def __init__(self):
            super().__init__()
            self.mean, self.std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)

    load_weights(PlainStats(), _save(_normalising_wrapper_state(_trained_net()), tmp_path, "plain.pt"))


def test_wrong_network_names_the_keys(tmp_path):
    path = _save({"state_dict": {f"module.{k}": v for k, v in _trained_net().state_dict().items()}}, tmp_path)
    with pytest.raises(UsageError) as err:
        load_weights(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 10)), path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"checkpoint {path} does not fit model Sequential: missing keys 0.weight, 0.bias, 2.weight")
    assert "unexpected keys module.features.0.weight, module.features.0.bias, module.features.1.weight (+" in msg
    with pytest.raises(UsageError, match=r"classifier.weight has shape \(10, 32\) in the file, \(3, 32\) in the model"):
        load_weights(SmallNet(classes=3), path)


@pytest.mark.parametrize("text, want", [
    (CIFAR, (MEAN, STD)),
    ("std=0.2471,0.2435,0.2616,mean=0.4914,0.4822,0.4465", (MEAN, STD)),
    ("mean=(0.5,0.5,0.5), std=[0.25,0.25,0.25]", ((0.5,) * 3, (0.25,) * 3)),
    ("mean=0.5,std=0.5", ((0.5,), (0.5,))),
    ("mean=0,std=0.2471,0.2435,0.2616", ((0.0,) * 3, STD)),
    ("mean=128/255,std=1", ((128 / 255,), (1.0,))),
])
def test_parse_normalize(text, want):
    assert parse_normalize(text) == want


@pytest.mark.parametrize("text, match", [
    ("0.5,0.5", r"^--normalize expects mean=M,M,M,std=S,S,S \(one value per channel, or one for all"),
    ("mean=0.5", "--normalize expects mean="),
    ("mean=0.5,mean=0.5", "--normalize expects mean="),
    ("mean=0.5,std=0.5,sigma=1", r"--normalize std='0.5,sigma=1' is not a list of numbers"),
    ("mean=,std=0.5", r"--normalize mean='' is not a list of numbers \(no values\)"),
    ("mean=0.5,,0.5,std=0.5", r"item 2 is empty"),
    ("mean=0.5,0.5,std=0.5,0.5,0.5", "2 mean values but 3 std values"),
    ("mean=0.5,std=0", "std must be positive"),
])
def test_bad_normalize(text, match):
    with pytest.raises(UsageError, match=match) as err:
        parse_normalize(text)
    assert "\n" not in str(err.value)


def test_broadcast_normaliser_and_state_dict_keys():
    net = nn.Conv2d(1, 2, 1)
    model = NormalizedModel(net, 0.5, 0.5)
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(model(x), net((x - 0.5) / 0.5))
    assert NormalizedModel(nn.Identity(), 0.5, 0.5)(torch.rand(1, 3, 2, 2)).shape == (1, 3, 2, 2)
    assert set(model.state_dict()) == {"model.weight", "model.bias"}  # the stats are not weights
    with pytest.raises(UsageError, match=r"the normaliser expects N x 3 x H x W images, got shape \(1, 1, 2, 2\)"):
        NormalizedModel(nn.Identity(), MEAN, STD)(torch.rand(1, 1, 2, 2))
    with pytest.raises(UsageError, match="2 mean values but 3 std values"):
        NormalizedModel(nn.Identity(), (0.1, 0.2), STD)


def test_the_base_class_points_to_the_wrapper():
    from harness.models.normalize import Normalized

    with pytest.raises(TypeError, match=r"NormalizedModel\(module, mean, std\)"):
        Normalized(nn.Identity(), MEAN, STD)

"""Your own model (issue 22, items 3 and 8): factory references, --model-arg values, checkpoints in the usual
training-script / RobustBench layouts, and the outside normaliser."""
from __future__ import annotations

import sys
import textwrap

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
    yield folder / "model.py"
    sys.modules.pop("blocks", None)


@pytest.mark.parametrize("text", ["model.py:build", "path/to/file.py:factory", "C:\\src\\net.py:build",
                                  "pkg.module:factory", "timm:create_model", "torch.nn:Linear", "pkg:Cls.create"])
def test_factory_refs(text):
    assert is_factory_ref(text)


@pytest.mark.parametrize("text", ["digits_cnn", "runs/model.pt", "C:\\models\\net.pt", "C:net", "model.py",
                                  "model.py:", ":build", "http://host/model.pt", "pkg.module:9lives",
                                  "my-pkg:build", "./model.pt:latest"])
def test_not_factory_refs(text):
    assert not is_factory_ref(text)


def test_file_factory_with_kwargs_and_sibling_import(user_file):
    path_before = list(sys.path)
    model = load_factory(f"{user_file}:build", {"width": 6, "classes": 3, "scale": 0.5})
    assert isinstance(model, nn.Module) and not model.training  # returned in eval mode
    assert model.head.out_features == 3 and model.scale == 0.5
    assert type(model).__module__.startswith("harness_user_model_")
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 3)
    assert sys.path == path_before  # the file's folder was on sys.path only while importing and building


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
    assert _error(f"{tmp_path}/bad.py:build").startswith(f"model file {tmp_path}/bad.py failed to import: SyntaxError: ")
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
    assert msg.startswith(f"{user_file} has no 'biuld'; callables there: Net, build, broken, not_a_model")
    assert "CONFIG" not in msg and "torch" not in msg


def test_not_callable_raises_and_wrong_return(user_file):
    assert _error(f"{user_file}:CONFIG") == f"{user_file}:CONFIG: CONFIG is a dict, not a callable that returns an nn.Module"
    assert _error(f"{user_file}:broken", {"depth": 3}) == (
        f"model factory {user_file}:broken raised RuntimeError: weights missing when called with depth=3")
    assert _error(f"{user_file}:build", {"depht": 3}).startswith(
        f"model factory {user_file}:build raised TypeError: build() got an unexpected keyword argument 'depht'")
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

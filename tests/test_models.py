"""Architectures, in-model normalisation and checkpoint loading (harness/models/*)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.core.errors import UsageError
from harness.core.registry import MODELS
from harness.models.checkpoint import load_checkpoint
from harness.models.preact_resnet import preact_resnet18
from harness.models.resnet import resnet18, resnet34, resnet50
from harness.models.resnet_imagenet import resnet50_imagenet
from harness.models.wide_resnet import wide_resnet, wrn34_10

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_PNGS = DATA / "cifar10_test_images"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _autoattack_example() -> Path:
    spec = importlib.util.find_spec("pyautoattack")
    if spec is None or spec.origin is None:
        pytest.skip("pyautoattack is not installed")
    path = Path(spec.origin).parent / "examples" / "model_test.pt"
    if not path.is_file():
        pytest.skip(f"pyautoattack ships no example checkpoint at {path}")
    return path


def _cifar_pngs(per_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` PNGs of each class (sorted by path), as [0, 1] NCHW floats and labels."""
    if not CIFAR_PNGS.is_dir():
        pytest.skip(f"CIFAR-10 test PNGs not found at {CIFAR_PNGS} (the shared data folder is absent)")
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(CIFAR_CLASSES):
        files = sorted((CIFAR_PNGS / name).glob("*.png"))[:per_class]
        assert files, f"no PNGs in {CIFAR_PNGS / name}"
        for f in files:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    return x, torch.tensor(labels)


@torch.no_grad()
def _accuracy(model, x, y, batch=250) -> float:
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(y), batch))
    return correct / len(y)


def _tiny_wrn():
    return wide_resnet(depth=10, widen_factor=1)


# --- architectures -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory, kwargs, shape, classes", [
    (resnet18, {}, (2, 3, 32, 32), 10),
    (resnet18, {"num_classes": 100}, (2, 3, 32, 32), 100),
    (resnet18, {"in_channels": 1, "mean": (0.1307,), "std": (0.3081,)}, (2, 1, 28, 28), 10),
    (resnet34, {}, (2, 3, 32, 32), 10),
    (resnet50, {}, (2, 3, 32, 32), 10),
    (preact_resnet18, {}, (2, 3, 32, 32), 10),
    (preact_resnet18, {"preact_shortcut": True}, (2, 3, 32, 32), 10),
    (wide_resnet, {"depth": 16, "widen_factor": 2}, (2, 3, 32, 32), 10),
    (wrn34_10, {}, (1, 3, 32, 32), 10),
    (resnet50_imagenet, {}, (1, 3, 224, 224), 1000),
])
def test_forward_shapes(factory, kwargs, shape, classes):
    torch.manual_seed(0)
    model = factory(**kwargs).eval()
    with torch.no_grad():
        out = model(torch.rand(shape))
    assert out.shape == (shape[0], classes)
    assert torch.isfinite(out).all()


def test_registered_names():
    for name in ("resnet18", "resnet34", "resnet50", "preact_resnet18", "wrn34_10", "wide_resnet",
                 "resnet50_imagenet"):
        assert name in MODELS, name
        assert MODELS.get(name).description
    assert set(MODELS.get("resnet18").params) >= {"num_classes", "in_channels", "mean", "std"}
    model = MODELS.create("wide_resnet", depth=10, widen_factor=1, num_classes=3)
    assert model.fc.out_features == 3


def test_parameter_counts_match_the_reference_implementations():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(resnet18()) == 11_173_962            # kuangliu / AutoAttack example ResNet-18
    assert count(wrn34_10()) == 46_160_474            # TRADES WRN-34-10 (without its unused sub_block1)
    assert count(resnet50_imagenet()) == 25_557_032   # torchvision resnet50


def test_key_layouts():
    assert {"conv1.weight", "bn.weight", "linear.weight", "layer2.0.shortcut.0.weight"} <= set(
        preact_resnet18().state_dict())
    wrn = set(_tiny_wrn().state_dict())
    assert {"conv1.weight", "block2.layer.0.convShortcut.weight", "block3.layer.0.bn2.running_var",
            "bn1.weight", "fc.weight", "fc.bias"} <= wrn
    r50 = resnet50_imagenet().state_dict()
    assert {"conv1.weight", "bn1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.bias"} <= set(r50)
    assert r50["conv1.weight"].shape == (64, 3, 7, 7) and r50["fc.weight"].shape == (1000, 2048)


def test_wide_resnet_rejects_bad_depth():
    with pytest.raises(UsageError, match="6n \\+ 4"):
        wide_resnet(depth=30)


# --- normalisation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [resnet18, preact_resnet18, _tiny_wrn, resnet50_imagenet])
def test_normalisation_buffers_are_not_in_the_state_dict(factory):
    model = factory()
    names = dict(model.named_buffers())
    assert "mean" in names and "std" in names
    assert not any(k in ("mean", "std") for k in model.state_dict())


def test_imagenet_defaults_and_broadcast():
    model = resnet50_imagenet()
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    grey = resnet18(mean=(0.5,), std=(0.25,))
    assert grey.mean.shape == (1, 3, 1, 1) and torch.all(grey.mean == 0.5) and torch.all(grey.std == 0.25)


def test_normalisation_is_applied_inside_the_model():
    torch.manual_seed(0)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    plain, normed = resnet18().eval(), resnet18(mean=mean, std=std).eval()
    normed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 32, 32)
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normed(x), plain(manual), atol=1e-5)


def test_bad_normalisation_arguments():
    with pytest.raises(UsageError, match="mean has 2 values"):
        resnet18(mean=(0.5, 0.5))
    with pytest.raises(UsageError, match="std must be positive"):
        resnet18(std=(0.0,))
    with pytest.raises(UsageError, match="expects N x 3 x H x W"):
        resnet18()(torch.rand(1, 1, 32, 32))


# --- the AutoAttack example checkpoint on real CIFAR-10 images ---------------------------------------------


def test_autoattack_example_loads_into_resnet18():
    path = _autoattack_example()
    model = load_checkpoint(resnet18(), str(path), "resnet18")
    assert not model.training
    assert set(model.state_dict()) == set(torch.load(path, map_location="cpu", weights_only=True))


def test_autoattack_example_classifies_cifar10():
    model = load_checkpoint(resnet18(), str(_autoattack_example()), "resnet18")
    x, y = _cifar_pngs(per_class=50)
    assert x.shape == (500, 3, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0
    acc = _accuracy(model, x, y)
    assert acc > 0.85, f"clean accuracy {acc:.3f} on 500 CIFAR-10 test images"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HARNESS_SLOW") != "1", reason="full 10,000-image check; set HARNESS_SLOW=1")
def test_autoattack_example_full_cifar10_accuracy():
    model = load_checkpoint(resnet18(), str(_autoattack_example()), "resnet18")
    x, y = _cifar_pngs(per_class=None)
    assert len(y) == 10_000
    assert abs(_accuracy(model, x, y) - 0.9422) < 0.0005


# --- checkpoint loading ------------------------------------------------------------------------------------


def _save(obj, tmp_path, name="ckpt.pt") -> str:
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 7},
    lambda sd: {"model_state_dict": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    lambda sd: {f"module.model.{k}": v for k, v in sd.items()},
    lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
], ids=["plain", "state_dict", "model_state_dict", "model+module", "module.model", "compiled"])
def test_common_wrappings_are_undone(tmp_path, wrap):
    torch.manual_seed(0)
    source = _tiny_wrn().eval()
    path = _save(wrap(source.state_dict()), tmp_path)
    torch.manual_seed(1)
    loaded = load_checkpoint(_tiny_wrn().train(), path, "wide_resnet")
    assert not loaded.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_normalising_wrapper_with_matching_stats(tmp_path):
    sd = {f"model.{k}": v for k, v in _tiny_wrn().state_dict().items()}
    sd["normalize.mean"] = torch.zeros(1, 3, 1, 1)
    sd["normalize.std"] = torch.ones(1, 3, 1, 1)
    load_checkpoint(_tiny_wrn(), _save(sd, tmp_path), "wide_resnet")
    with pytest.raises(UsageError, match="normalises inputs with mean=0.5,0.5,0.5") as err:
        sd["normalize.mean"] = torch.full((3,), 0.5)
        load_checkpoint(_tiny_wrn(), _save(sd, tmp_path), "wide_resnet")
    assert "\n" not in str(err.value)


def test_trades_sub_block1_and_old_batchnorm_keys_are_tolerated(tmp_path):
    sd = _tiny_wrn().state_dict()
    sd.update({f"sub_block1.{k}": v for k, v in wide_resnet(depth=10, widen_factor=1).block1.state_dict().items()})
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    load_checkpoint(_tiny_wrn(), _save(sd, tmp_path), "wide_resnet")


def test_wrong_architecture_names_keys(tmp_path):
    path = _save(_tiny_wrn().state_dict(), tmp_path)
    with pytest.raises(UsageError) as err:
        load_checkpoint(resnet18(), path, "resnet18")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"checkpoint {path} does not fit arch resnet18" in msg
    assert "conv1.weight has shape (16, 3, 3, 3) in the file, (64, 3, 3, 3) in the model" in msg
    assert "missing keys layer1.0.conv1.weight" in msg and "unexpected keys block1.layer.0.bn1.weight" in msg
    assert "more)" in msg


def test_wrong_class_count_names_the_shape(tmp_path):
    path = _save(resnet18(num_classes=100).state_dict(), tmp_path)
    with pytest.raises(UsageError) as err:
        load_checkpoint(resnet18(), path, "resnet18")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (f"checkpoint {path} does not fit arch resnet18: linear.weight has shape (100, 512) in the file, "
                   "(10, 512) in the model; linear.bias has shape (100,) in the file, (10,) in the model")


@pytest.mark.parametrize("content, match", [
    (b"this is not a checkpoint at all", "is not a PyTorch checkpoint"),
    (b"", "is not a PyTorch checkpoint"),
])
def test_garbage_files(tmp_path, content, match):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=match) as err:
        load_checkpoint(_tiny_wrn(), str(path), "wide_resnet")
    assert "\n" not in str(err.value)


def test_pickled_whole_model_is_refused(tmp_path):
    path = _save(_tiny_wrn(), tmp_path)
    with pytest.raises(UsageError, match="pickles Python objects.*state_dict") as err:
        load_checkpoint(_tiny_wrn(), path, "wide_resnet")
    assert "\n" not in str(err.value)


def test_checkpoints_without_a_state_dict(tmp_path):
    with pytest.raises(UsageError, match="holds a Tensor, not a state dict"):
        load_checkpoint(_tiny_wrn(), _save(torch.zeros(3), tmp_path), "wide_resnet")
    with pytest.raises(UsageError, match="holds no tensors"):
        load_checkpoint(_tiny_wrn(), _save({"epoch": 3, "acc": 0.5}, tmp_path), "wide_resnet")


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_checkpoint(_tiny_wrn(), str(tmp_path / "nope.pt"), "wide_resnet")
    with pytest.raises(UsageError, match="is a directory"):
        load_checkpoint(_tiny_wrn(), str(tmp_path), "wide_resnet")

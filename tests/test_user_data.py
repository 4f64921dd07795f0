"""Your own data (issue 22, items 4 and 8): arrays, .npz/.pt files, torch datasets, image folders with resize and
crop, and the one-line errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from harness.core.errors import DataError, UsageError
from harness.data import ImageSet, check_model_fits, from_arrays, from_dataset, load, load_file


def _xy(n=6, c=3, h=5, w=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g), torch.arange(n) % classes


def _err(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as err:
        fn(*args, **kw)
    msg = str(err.value)
    assert "\n" not in msg
    assert isinstance(err.value, UsageError)  # exit 2
    return msg


# --- arrays --------------------------------------------------------------------------------------------------


def test_tensors_and_numpy_give_the_same_set():
    x, y = _xy()
    a, b = from_arrays(x, y), from_arrays(x.numpy(), y.numpy().astype(np.int32))
    assert isinstance(a, ImageSet) and torch.equal(a.x, x) and torch.equal(a.y, y)
    assert torch.equal(b.x, a.x) and torch.equal(b.y, a.y) and b.y.dtype == torch.int64
    assert a.classes == ("0", "1", "2") and a.name == "arrays"
    named = from_arrays(x, y, classes=["cat", "dog", "eel"], name="pets")
    assert named.classes == ("cat", "dog", "eel") and named.name == "pets"


def test_layouts_are_converted():
    x, y = _xy(n=4, c=3, h=5, w=6)
    nhwc = x.permute(0, 2, 3, 1).numpy()  # N x H x W x C
    assert torch.equal(from_arrays(nhwc, y[:4]).x, x)
    gray = torch.rand(4, 7, 7)  # N x H x W
    assert torch.equal(from_arrays(gray, y[:4]).x, gray[:, None])
    nchw3 = torch.rand(4, 3, 3, 3)  # ambiguous: dim 1 is 3, so it is N x C x H x W
    assert torch.equal(from_arrays(nchw3, y[:4]).x, nchw3)
    column = from_arrays(x, y[:4, None])  # labels as an N x 1 column
    assert column.y.shape == (4,)
    assert torch.equal(from_arrays(x, y[:4].double()).y, y[:4])  # integral floats are labels too


def test_uint8_needs_a_scale():
    pixels = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4) * 2
    msg = _err(from_arrays, pixels, [0, 1])
    assert msg == ("arrays: images must lie in [0, 1], found [0, 190]; pass --scale 255 on the command line "
                   "(scale=255 in Python) to divide them (they are integers)")
    data = from_arrays(pixels, [0, 1], scale=255)
    assert torch.allclose(data.x, torch.from_numpy(pixels).float() / 255) and data.x.max() <= 1
    assert "scaled by 1/255" in data.note


@pytest.mark.parametrize("x, y, match", [
    (torch.rand(2, 3, 4, 4) * 2 - 1, [0, 1], r"found \[-.*they look normalised: pass images in \[0, 1\] and give the "
                                              r"normalisation to the model \(--normalize mean=...,std=...\)"),
    (torch.full((2, 1, 4, 4), float("nan")), [0, 1], "images contain NaN or infinite values"),
    (torch.rand(2, 4), [0, 1],
     r"images must be N x C x H x W \(or N x H x W x C, or N x H x W grayscale\), got shape \(2, 4\)"),
    (torch.rand(2, 1, 3, 4, 4), [0, 1], r"got shape \(2, 1, 3, 4, 4\)"),
    (torch.rand(3, 1, 4, 4), [0, 1], "3 images but 2 labels"),
    (torch.rand(2, 1, 4, 4), [0.0, 1.5], "labels must be integers, label 1 is 1.5"),
    (torch.rand(2, 1, 4, 4), [0, -1], "labels must be non-negative class indices, label 1 is -1"),
    (torch.rand(2, 1, 4, 4), np.eye(2),
     r"labels must be a vector of class indices, got shape \(2, 2\) \(one-hot\? pass y.argmax\(1\)\)"),
    (torch.rand(2, 1, 4, 4), ["a", "b"], "y is not a numeric array"),
    (torch.rand(0, 1, 4, 4), [], "no images"),
    (torch.rand(2, 1, 4, 4) * 255, [0, 1], r"found \[.*\]; pass --scale 255 on the command line"),
])
def test_bad_arrays(x, y, match):
    with pytest.raises(DataError, match=match) as err:
        from_arrays(x, y)
    assert "\n" not in str(err.value)


def test_labels_beyond_the_named_classes():
    x, y = _xy(classes=3)
    assert "label 2 is out of range for its 2 classes" in _err(from_arrays, x, y, classes=["a", "b"])


# --- files ---------------------------------------------------------------------------------------------------


def test_npz_and_pt_files(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "set.npz", x=x.numpy(), y=y.numpy())
    torch.save((x, y), tmp_path / "tuple.pt")
    torch.save([x, y], tmp_path / "list.pt")
    torch.save({"x": x, "y": y, "classes": ["a", "b", "c"]}, tmp_path / "dict.pt")
    for name in ("set.npz", "tuple.pt", "list.pt", "dict.pt"):
        data = load_file(tmp_path / name)
        assert torch.equal(data.x, x) and torch.equal(data.y, y), name
        assert data.name == name.split(".")[0] and str(tmp_path / name) in data.note
    assert load_file(tmp_path / "dict.pt").classes == ("a", "b", "c")
    pixels = (x * 255).round().to(torch.uint8)
    np.savez_compressed(tmp_path / "u8.npz", x=pixels.permute(0, 2, 3, 1).numpy(), y=y.numpy(),
                        classes=np.array(["a", "b", "c"]))
    u8 = load_file(str(tmp_path / "u8.npz"), scale=255, name="mine")
    assert u8.name == "mine" and u8.classes == ("a", "b", "c") and torch.equal(u8.x, pixels.float() / 255)


def test_bad_files(tmp_path):
    assert _err(load_file, tmp_path / "none.npz") == f"data file {tmp_path / 'none.npz'} not found"
    np.savez(tmp_path / "keys.npz", images=np.zeros((2, 1, 3, 3)), labels=np.zeros(2))
    assert _err(load_file, tmp_path / "keys.npz") == (
        f"data file {tmp_path / 'keys.npz'} has no x array (it has: images, labels); "
        "save it with np.savez(path, x=images, y=labels)")
    np.savez(tmp_path / "nox.npz", x=np.zeros((2, 1, 3, 3)))
    assert "has no y array (it has: x)" in _err(load_file, tmp_path / "nox.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    assert _err(load_file, tmp_path / "junk.npz").startswith(f"cannot read data file {tmp_path / 'junk.npz'}: ")
    (tmp_path / "junk.pt").write_bytes(b"\x80garbage")
    assert _err(load_file, tmp_path / "junk.pt").startswith(
        f"cannot read data file {tmp_path / 'junk.pt'} as tensors (weights_only=True): ")
    torch.save(nn.Linear(1, 1), tmp_path / "module.pt")  # pickled code is refused, not run
    assert "weights_only=True" in _err(load_file, tmp_path / "module.pt")
    torch.save({"images": torch.zeros(1)}, tmp_path / "keys.pt")
    assert _err(load_file, tmp_path / "keys.pt") == (
        f"data file {tmp_path / 'keys.pt'} holds a dict with keys images; save torch.save((x, y), path) or "
        "torch.save({'x': x, 'y': y}, path)")
    torch.save((torch.zeros(1),) * 3, tmp_path / "three.pt")
    assert "holds a tuple of length 3" in _err(load_file, tmp_path / "three.pt")
    (tmp_path / "data.csv").write_text("1,2")
    assert "unknown format .csv" in _err(load_file, tmp_path / "data.csv")
    np.savez(tmp_path / "range.npz", x=np.full((2, 1, 3, 3), 200.0), y=np.zeros(2, dtype=int))
    assert "pass --scale 255 on the command line (scale=255 in Python)" in _err(load_file, tmp_path / "range.npz")


# --- torch datasets ------------------------------------------------------------------------------------------


class Items(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i].numpy(), int(self.y[i])


class Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))


def test_datasets_and_loaders():
    x, y = _xy(n=10)
    for obj in (TensorDataset(x, y), Items(x, y), Stream(x, y), DataLoader(TensorDataset(x, y), batch_size=3)):
        data = from_dataset(obj)
        assert torch.equal(data.x, x) and torch.equal(data.y, y), type(obj).__name__
        limited = from_dataset(obj, limit=4)
        assert torch.equal(limited.x, x[:4]) and torch.equal(limited.y, y[:4]), type(obj).__name__
    assert from_dataset(TensorDataset(x, y)).name == "TensorDataset"
    assert from_dataset(DataLoader(Items(x, y), batch_size=4)).name == "Items"


def test_pil_dataset_needs_a_scale():
    from PIL import Image

    images = [Image.fromarray(np.full((4, 4, 3), 10 * i, dtype=np.uint8)) for i in range(3)]
    items = list(zip(images, [0, 1, 2]))
    assert "pass --scale 255" in _err(from_dataset, items)
    data = from_dataset(items, scale=255)
    assert data.x.shape == (3, 3, 4, 4) and torch.allclose(data.x[2], torch.full((3, 4, 4), 20 / 255))


def test_bad_datasets():
    x, y = _xy(n=4)
    assert "item 0 is a tuple of length 3; expected an (image, label) pair" in _err(
        from_dataset, TensorDataset(x, y, y))
    assert "item 2 has shape (3, 2, 2) but item 0 has (3, 5, 4)" in _err(
        from_dataset, [(x[0], 0), (x[1], 1), (torch.rand(3, 2, 2), 0)])
    assert "the dataset is empty" in _err(from_dataset, TensorDataset(x[:0], y[:0]))
    assert "cannot read images from a int" in _err(from_dataset, 3)
    batches = DataLoader(TensorDataset(x, y), batch_size=2, collate_fn=lambda b: {"x": b})
    assert "batch 0 is a dict; expected an (image, label) pair" in _err(from_dataset, batches)


# --- the data against the model ------------------------------------------------------------------------------


def _net(width: int, channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(width))


def test_check_model_fits_widens_unnamed_classes():
    x, y = _xy(classes=3)
    data = from_arrays(x, y)
    model = _net(10)
    model(x[:1])  # materialise the lazy layer
    model.train()
    before = model[1].running_mean.clone()
    check_model_fits(data, model, "cpu")
    assert data.classes == tuple(str(i) for i in range(10))
    assert model.training and torch.equal(model[1].running_mean, before)  # mode restored, no statistics touched
    named = from_arrays(x, y, classes=["a", "b", "c"])
    check_model_fits(named, model.eval(), "cpu")
    assert named.classes == ("a", "b", "c")


def test_check_model_fits_errors():
    x, y = _xy(classes=3)
    data = from_arrays(x, y)
    assert _err(check_model_fits, data, _net(2), "cpu") == (
        "arrays: labels go up to 2 but the model outputs 2 logits per image; it needs at least 3")
    assert "the model returns shape (2, 1, 2) for 2 images; expected logits of shape (2, classes)" in _err(
        check_model_fits, data, nn.Sequential(_net(2), nn.Unflatten(1, (1, 2))), "cpu")
    assert "the model returns a tuple, not a tensor of logits" in _err(
        check_model_fits, data, TupleNet(), "cpu")
    assert _err(check_model_fits, data, _net(10, channels=1), "cpu").startswith(
        "arrays: the model fails on images of shape (3, 5, 4): RuntimeError: ")


class TupleNet(nn.Module):
    def forward(self, x):
        return x.flatten(1), x


# --- image folders: resize and crop --------------------------------------------------------------------------


def _png(path, size, colour):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[...] = colour
    arr[size[1] // 2, size[0] // 2] = (255, 255, 255)  # a marker at the centre
    Image.fromarray(arr).save(path)


def test_imagefolder_resize_and_crop(tmp_path):
    from PIL import Image

    _png(tmp_path / "cat" / "a.png", (40, 30), (10, 20, 30))   # landscape
    _png(tmp_path / "dog" / "b.png", (20, 50), (40, 50, 60))   # portrait
    with pytest.raises(DataError, match=r"resize them first \(or pass --resize N --crop N\)"):
        load("imagefolder", "test", str(tmp_path))
    data = load("imagefolder", "test", str(tmp_path), resize=16, crop=12)
    assert data.x.shape == (2, 3, 12, 12) and data.classes == ("cat", "dog")
    assert "shorter side resized to 16 (bilinear), center-cropped to 12x12" in data.note
    # the same steps by hand with PIL: 40x30 -> 21x16 -> centre 12x12 at (4, 2); 20x50 -> 16x40 -> (2, 14)
    img = Image.open(tmp_path / "cat" / "a.png").convert("RGB").resize((21, 16), Image.BILINEAR)
    want = torch.from_numpy(np.array(img.crop((4, 2, 16, 14)))).permute(2, 0, 1).float() / 255
    assert torch.equal(data.x[0], want)
    img = Image.open(tmp_path / "dog" / "b.png").convert("RGB").resize((16, 40), Image.BILINEAR)
    want = torch.from_numpy(np.array(img.crop((2, 14, 14, 26)))).permute(2, 0, 1).float() / 255
    assert torch.equal(data.x[1], want)
    cropped = load("imagefolder", "test", str(tmp_path), crop=20)  # crop alone: the central 20x20 of each image
    assert cropped.x.shape == (2, 3, 20, 20) and cropped.x[:, :, 10, 10].eq(1).all()  # the centre marker
    with pytest.raises(DataError, match=r"b.png is 20x50, smaller than --crop 24; add --resize 24"):
        load("imagefolder", "test", str(tmp_path), crop=24)
    with pytest.raises(DataError, match="--resize must be a positive number of pixels, got 0"):
        load("imagefolder", "test", str(tmp_path), resize=0)


def test_imagefolder_resize_and_crop_from_set_strings():
    from harness.core.registry import DATASETS

    params = DATASETS.get("imagefolder").params
    assert params["resize"].parse("256") == 256 and params["crop"].parse("none") is None

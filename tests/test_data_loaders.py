"""Dataset loaders: format parsing on tiny synthetic files, the real data in ../shared/data, downloads, errors."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.core.errors import DataError
from harness.core.registry import DATASETS
from harness.data import checksums, load
from harness.data.cifar import CIFAR10_CLASSES, read_batch
from harness.data.download import MIRROR_ENV, download, extract_tar, url_for
from harness.data.imagefolder import read_image_folder
from harness.data.mnist import read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = SHARED / "mnist"
CIFAR_PNG = SHARED / "cifar10_test_images"
needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason=f"real MNIST test files not found in {MNIST_DIR}")
needs_cifar_png = pytest.mark.skipif(not CIFAR_PNG.is_dir(), reason=f"CIFAR-10 PNG test images not found in {CIFAR_PNG}")


# ---------------------------------------------------------------- helpers


def write_idx(path: Path, arr: np.ndarray, compress: bool = True) -> Path:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + np.asarray(arr.shape, ">i4").tobytes()
    raw = header + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist(folder: Path, n: int = 10, part: str = "t10k", compress: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images, compress)
    write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels


def write_cifar_batch(path: Path, n: int, label_key: str = "labels", n_classes: int = 10, seed: int = 0,
                      bytes_keys: bool = False):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(i % n_classes) for i in range(n)]
    batch = {"data": data, label_key: labels, "batch_label": "synthetic"}
    if bytes_keys:  # how Python 2 pickles read with encoding="bytes" look
        batch = {k.encode(): v for k, v in batch.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return data, labels


def write_png(path: Path, size=(8, 8), mode="RGB", value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serve(directory: Path):
    """An HTTP server on 127.0.0.1 (a free port) serving ``directory``; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def no_md5(monkeypatch):
    """Synthetic files carry official names but not the official bytes: skip the published checksums."""
    for name in list(checksums.MD5):
        monkeypatch.setitem(checksums.MD5, name, {})


@pytest.fixture
def loopback(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- registry


def test_all_loaders_registered():
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "imagefolder"):
        entry = DATASETS.get(name)
        extra = {"resize", "crop"} if name == "imagefolder" else set()  # ImageNet-style folders (issue 22)
        assert entry.description and set(entry.params) == {"split", "data_dir", "download"} | extra


# ---------------------------------------------------------------- idx / MNIST


def test_read_idx_gzip_and_raw(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", arr)), arr)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", arr, compress=False)), arr)
    ints = np.array([1, -2, 70000], dtype=">i4")
    assert read_idx(write_idx(tmp_path / "b.gz", ints)).tolist() == [1, -2, 70000]


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x08\x08\x03\x01rest")
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(bad)
    arr = np.zeros((4, 28, 28), np.uint8)
    raw = gzip.decompress(write_idx(tmp_path / "t.gz", arr).read_bytes())
    (tmp_path / "t.gz").write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(DataError, match="bytes"):
        read_idx(tmp_path / "t.gz")
    (tmp_path / "c.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(DataError, match="gzip"):
        read_idx(tmp_path / "c.gz")


def test_mnist_synthetic_splits_and_layouts(tmp_path, no_md5):
    images, labels = write_mnist(tmp_path / "MNIST" / "raw", n=10)  # torchvision's layout
    test = load("mnist", "test", str(tmp_path))
    assert test.x.shape == (10, 1, 28, 28) and test.x.dtype == torch.float32
    assert torch.allclose(test.x[:, 0], torch.from_numpy(images).float() / 255)
    assert test.y.tolist() == labels.tolist() and test.classes == tuple("0123456789")
    assert test.default_eps == {"linf": 0.3, "l2": 2.0} and test.default_model is None
    head, tail = load("mnist", "test-train", str(tmp_path)), load("mnist", "test-holdout", str(tmp_path))
    assert (len(head), len(tail)) == (8, 2)
    assert torch.equal(torch.cat([head.x, tail.x]), test.x)
    assert "first 8" in head.note and "last 2" in tail.note
    write_mnist(tmp_path, n=6, part="train", compress=False, seed=1)  # uncompressed, in DIR itself
    assert len(load("mnist", "train", str(tmp_path))) == 6


def test_fashion_mnist_synthetic(tmp_path, no_md5):
    write_mnist(tmp_path / "fashion_mnist", n=10)
    data = load("fashion_mnist", "test", str(tmp_path))
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot" and len(data) == 10


def test_mnist_md5_mismatch_names_the_file(tmp_path):
    write_mnist(tmp_path / "mnist", n=10)  # official names, synthetic bytes
    with pytest.raises(DataError) as excinfo:
        load("mnist", "test", str(tmp_path))
    msg = one_line_error(excinfo)
    assert "t10k-images-idx3-ubyte.gz" in msg and "MD5" in msg and checksums.MD5["mnist"]["t10k-images-idx3-ubyte.gz"] in msg


def test_checksum_verify_skips_unpublished_files(tmp_path):
    f = tmp_path / "t10k-images-idx3-ubyte"  # uncompressed: no published checksum
    f.write_bytes(b"x")
    assert checksums.verify(f, "mnist") is False
    g = tmp_path / "test_batch"
    g.write_bytes(b"x")
    with pytest.raises(DataError, match="test_batch"):
        checksums.verify(g, "cifar10")


# ---------------------------------------------------------------- CIFAR pickles


def test_cifar10_pickle_batches(tmp_path, no_md5):
    folder = tmp_path / "cifar-10-batches-py"
    data, labels = write_cifar_batch(folder / "test_batch", 6, bytes_keys=True)
    for i in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{i}", 4, seed=i)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}, protocol=2))
    test = load("cifar10", "test", str(tmp_path))
    assert test.x.shape == (6, 3, 32, 32) and test.y.tolist() == labels
    assert test.x[0, 0, 0, 0].item() == pytest.approx(data[0, 0] / 255)  # red plane first
    assert test.x[0, 1, 0, 0].item() == pytest.approx(data[0, 1024] / 255)  # then green
    assert test.x[0, 2, 31, 31].item() == pytest.approx(data[0, 3071] / 255)
    assert test.classes == CIFAR10_CLASSES and test.default_eps == {"linf": 8 / 255, "l2": 0.5}
    assert len(load("cifar10", "train", str(tmp_path))) == 20


def test_cifar100_pickle_batches(tmp_path, no_md5):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    write_cifar_batch(folder / "test", 5, label_key="fine_labels", n_classes=100)
    names = [f"class{i:03d}" for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": []}, protocol=2))
    data = load("cifar100", "test", str(tmp_path))
    assert len(data) == 5 and data.num_classes == 100 and data.classes[7] == "class007"


def test_cifar_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DataError, match="refusing"):
        read_batch(path)


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_cifar10_from_archive_and_unsafe_archive(tmp_path, no_md5):
    batch = tmp_path / "src" / "test_batch"
    write_cifar_batch(batch, 3)
    _tar(tmp_path / "cifar-10-python.tar.gz", {"cifar-10-batches-py/test_batch": batch.read_bytes()})
    assert len(load("cifar10", "test", str(tmp_path))) == 3
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").is_file()

    evil = _tar(tmp_path / "evil.tar.gz", {"../escaped.txt": b"x"})
    with pytest.raises(DataError, match="unsafe"):
        extract_tar(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_cifar10_png_fallback_synthetic(tmp_path):
    for i, cls in enumerate(CIFAR10_CLASSES):
        write_png(tmp_path / "cifar10_test_images" / cls / f"img_{i}.png", (32, 32), value=(i, 2 * i, 3 * i))
    data = load("cifar10", "test", str(tmp_path))
    assert data.y.tolist() == list(range(10)) and data.x.shape == (10, 3, 32, 32)
    assert data.x[3, :, 0, 0].mul(255).round().tolist() == [3, 6, 9]
    assert "PNG" in data.note
    with pytest.raises(DataError, match="data_batch_1"):  # the PNG copy is only the test split
        load("cifar10", "train", str(tmp_path))


# ---------------------------------------------------------------- SVHN


def test_svhn_mat(tmp_path, no_md5):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    (tmp_path / "svhn").mkdir()
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [9], [10]], dtype=np.uint8)})
    data = load("svhn", "test", str(tmp_path))
    assert data.y.tolist() == [0, 1, 9, 0] and data.x.shape == (4, 3, 32, 32)
    assert data.x[2, 1, 5, 7].item() == pytest.approx(x[5, 7, 1, 2] / 255)


# ---------------------------------------------------------------- image folders


def test_imagefolder_order_split_and_modes(tmp_path):
    root = tmp_path / "set"
    write_png(root / "test" / "zebra" / "b.png", value=(1, 1, 1))
    write_png(root / "test" / "zebra" / "a.jpg", value=(2, 2, 2))
    write_png(root / "test" / "ant" / "c.png", mode="L", value=5)  # grayscale among colour: becomes RGB
    (root / "test" / "ant" / "notes.txt").write_text("ignored")
    write_png(root / "train" / "ant" / "d.png")
    data = load("imagefolder", "test", str(root))
    assert data.classes == ("ant", "zebra") and data.y.tolist() == [0, 1, 1]
    assert data.x.shape == (3, 3, 8, 8)
    assert data.x[:, 0, 0, 0].mul(255).round().tolist() == [5, 2, 1]  # c.png, then a.jpg before b.png
    with pytest.raises(DataError, match="split"):
        load("imagefolder", "val", str(root))

    gray = tmp_path / "gray"
    write_png(gray / "a" / "1.png", mode="L", value=255)
    assert load("imagefolder", "test", str(gray)).x.shape == (1, 1, 8, 8)  # no split folder: root itself


def test_imagefolder_size_mismatch_and_empty(tmp_path):
    write_png(tmp_path / "a" / "1.png", (8, 8))
    write_png(tmp_path / "b" / "2.png", (9, 8))
    with pytest.raises(DataError) as excinfo:
        read_image_folder(tmp_path)
    msg = one_line_error(excinfo)
    assert str(tmp_path / "b" / "2.png") in msg and "one size" in msg
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="no .png"):
        read_image_folder(tmp_path / "empty")


# ---------------------------------------------------------------- missing data


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "imagefolder"])
def test_no_data_dir_says_pass_data_dir(name):
    with pytest.raises(DataError) as excinfo:
        load(name, "test", None)
    assert "--data-dir" in one_line_error(excinfo)


@pytest.mark.parametrize("name, expected", [
    ("mnist", "t10k-images-idx3-ubyte.gz"), ("fashion_mnist", "t10k-images-idx3-ubyte.gz"),
    ("cifar10", "test_batch"), ("cifar100", "test"), ("svhn", "test_32x32.mat"),
])
def test_missing_files_say_where_to_put_them(tmp_path, name, expected):
    with pytest.raises(DataError) as excinfo:
        load(name, "test", str(tmp_path))
    msg = one_line_error(excinfo)
    assert expected in msg and str(tmp_path) in msg and "download=true" in msg


def test_unknown_split_and_missing_dir(tmp_path):
    with pytest.raises(DataError, match="test-holdout"):
        load("mnist", "validation", str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load("cifar10", "test", str(tmp_path / "nope"))


# ---------------------------------------------------------------- downloads


def test_url_for_mirror_override(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert url_for("mnist", "t10k-labels-idx1-ubyte.gz") == \
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz"
    assert url_for("cifar10", "cifar-10-python.tar.gz") == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9/data/")
    assert url_for("svhn", "test_32x32.mat") == "http://127.0.0.1:9/data/svhn/test_32x32.mat"


@needs_mnist
def test_download_mnist_from_loopback_mirror(tmp_path, monkeypatch, loopback):
    with serve(SHARED) as base:  # serves SHARED/mnist/<file>, the layout HARNESS_MIRROR expects
        monkeypatch.setenv(MIRROR_ENV, base)
        data = load("mnist", "test", str(tmp_path / "data"), download=True)
        for fname in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            got = tmp_path / "data" / "mnist" / fname
            assert md5(got) == checksums.MD5["mnist"][fname]
        assert len(data) == 10_000
        assert not list((tmp_path / "data" / "mnist").glob(".*part"))

        # a wrong checksum leaves nothing behind, neither the file nor its temporary
        dest = tmp_path / "wrong" / "t10k-labels-idx1-ubyte.gz"
        with pytest.raises(DataError, match="MD5"):
            download(f"{base}/mnist/t10k-labels-idx1-ubyte.gz", dest, md5="0" * 32)
        assert list(dest.parent.iterdir()) == []
        with pytest.raises(DataError, match="offline"):
            download(f"{base}/mnist/no-such-file.gz", tmp_path / "x.gz")


def test_download_network_failure_is_one_line(tmp_path, loopback):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError) as excinfo:
        download(f"http://127.0.0.1:{port}/t10k-images-idx3-ubyte.gz", tmp_path / "t.gz", timeout=5)
    msg = one_line_error(excinfo)
    assert "offline" in msg and str(tmp_path) in msg and "t10k-images-idx3-ubyte.gz" in msg
    assert list(tmp_path.iterdir()) == []


def test_download_cifar10_archive_from_mirror(tmp_path, monkeypatch, loopback, no_md5):
    mirror = tmp_path / "mirror"
    batch = tmp_path / "src" / "test_batch"
    write_cifar_batch(batch, 2)
    (mirror / "cifar10").mkdir(parents=True)
    _tar(mirror / "cifar10" / "cifar-10-python.tar.gz", {"cifar-10-batches-py/test_batch": batch.read_bytes()})
    with serve(mirror) as base:
        monkeypatch.setenv(MIRROR_ENV, base)
        assert len(load("cifar10", "test", str(tmp_path / "data"), download=True)) == 2


# ---------------------------------------------------------------- real data (../shared/data)


@needs_mnist
def test_real_mnist_test_set():
    for fname in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        assert checksums.verify(MNIST_DIR / fname, "mnist") is True
    data = load("mnist", "test", str(SHARED))
    assert data.x.shape == (10_000, 1, 28, 28)
    assert data.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(data.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.x.mean().item() == pytest.approx(0.1325, abs=5e-4)
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(data.y.numpy(), labels)
    head, tail = load("mnist", "test-train", str(SHARED)), load("mnist", "test-holdout", str(SHARED))
    assert (len(head), len(tail)) == (8_000, 2_000)
    assert torch.equal(tail.y, data.y[8_000:])
    assert len(read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz")) == 60_000


@needs_mnist
def test_real_mnist_train_images_absent_message():
    if (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the MNIST training images are present")
    with pytest.raises(DataError) as excinfo:
        load("mnist", "train", str(SHARED))
    msg = one_line_error(excinfo)
    assert "train-images-idx3-ubyte.gz" in msg and "test-train" in msg


@needs_cifar_png
def test_real_cifar10_png_test_set():
    data = load("cifar10", "test", str(SHARED))
    assert data.x.shape == (10_000, 3, 32, 32) and data.classes == CIFAR10_CLASSES
    assert torch.bincount(data.y).tolist() == [1_000] * 10
    mean = data.x.mean(dim=(0, 2, 3))
    assert mean.tolist() == pytest.approx([0.4942, 0.4851, 0.4504], abs=2e-4)


# ---------------------------------------------------------------- lazy decoding of the CIFAR-10 PNG copy


def test_cifar10_png_take_decodes_only_n(tmp_path, monkeypatch):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in CIFAR10_CLASSES:
        for i in range(3):
            path = tmp_path / "cifar10_test_images" / cls / f"img_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            if cls == "airplane" and i == 0:  # a grayscale first image: RGB in the full load, so in take(1) too
                Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L").save(path)
            else:
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(path)
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))

    data = load("cifar10", "test", str(tmp_path))
    assert len(data) == 30 and opened == []  # listed, not decoded
    head = data.take(7)
    assert len(opened) == 7 and head.x.shape == (7, 3, 32, 32)
    assert sorted(opened) == sorted(str(p) for p in sorted((tmp_path / "cifar10_test_images").rglob("*.png"))[:7])
    one = data.take(1)
    assert len(opened) == 8
    with pytest.raises(DataError, match="out of range"):
        data.take(31)
    assert len(opened) == 8

    full = load("cifar10", "test", str(tmp_path))
    assert torch.equal(full.x[:7], head.x) and torch.equal(full.y[:7], head.y)
    assert torch.equal(full.x[:1], one.x) and one.x[0, 0].equal(one.x[0, 2])  # the grayscale image, as RGB
    assert len(opened) == 8 + 30  # reading x decodes every image once
    assert torch.equal(full.take(7).x, head.x) and len(opened) == 38  # decoded already: sliced, not re-read
    assert (head.classes, head.name, head.note, head.default_eps) == (full.classes, full.name, full.note,
                                                                       full.default_eps)
    eager, labels, _ = read_image_folder(tmp_path / "cifar10_test_images", classes=CIFAR10_CLASSES)
    assert torch.equal(full.x, torch.from_numpy(eager).float() / 255) and full.y.tolist() == labels.tolist()


def test_cifar10_png_run_decodes_only_the_images_it_evaluates(tmp_path, monkeypatch):
    """``harness run --n 4`` on the PNG copy opens 4 files, not the whole folder (memory flat in the folder size)."""
    from PIL import Image

    from harness.cli import main
    from harness.models.small import small_cnn

    rng = np.random.default_rng(1)
    for cls in CIFAR10_CLASSES:
        for i in range(2):
            path = tmp_path / "cifar10_test_images" / cls / f"img_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB").save(path)
    torch.manual_seed(0)
    torch.save(small_cnn(in_channels=3, image_size=32).state_dict(), tmp_path / "model.pt")
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    out = tmp_path / "run"
    assert main(["run", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--model", str(tmp_path / "model.pt"),
                 "--arch", "small_cnn", "--attack", "fgsm", "--n", "4", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    files = sorted((tmp_path / "cifar10_test_images").rglob("*.png"))  # class, then file name: the set's order
    chosen = [files[int(i)] for i in (out / "indices.txt").read_text().split()]  # the stratified draw
    assert sorted(opened) == sorted(map(str, chosen)) and len({p.parent for p in chosen}) == 4
    assert (out / "results.csv").read_text().splitlines()[1].split(",")[7] == "4"  # n

"""Image-dataset layer: IDX and CIFAR-10 readers, subsets, data root, missing data
(specs/benchmarks.md §2 "Datasets and environments", §6 "Minimum tests: Data")."""
import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from pcneuro import datasets
from pcneuro.datasets import images as im

FNAME_FLAG = 0x08  # gzip header flag: a file name is stored


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test sees the machine's real data settings, the Debian folder (unless it asks) or old cache."""
    for var in ("PCNEURO_DATA", "PCNEURO_NO_DOWNLOAD", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(im, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    im.clear_cache()
    yield
    im.clear_cache()


def fmnist_like(n, seed):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 28, 28), dtype=np.uint8), g.integers(0, 10, n).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("compress,store_name", [(False, True), (True, True), (True, False)])
def test_idx_round_trip_through_loader(tmp_path, compress, store_name):
    train, test = fmnist_like(13, 0), fmnist_like(7, 1)
    raw = im.write_fashion_mnist(tmp_path, train=train, test=test, gzip=compress, store_name=store_name)
    assert raw == tmp_path / "FashionMNIST" / "raw"
    suffix = ".gz" if compress else ""
    path = raw / f"train-images-idx3-ubyte{suffix}"
    head = path.read_bytes()[:4]
    if compress:
        assert head[:2] == b"\x1f\x8b" and bool(head[3] & FNAME_FLAG) == store_name
    else:
        assert head == b"\x00\x00\x08\x03"
    for split, (x, y) in (("train", train), ("test", test)):
        s = im.load_fashion_mnist(split, data_dir=tmp_path, download=False)
        assert (s.name, s.split, s.classes) == ("fashion_mnist", split, im.FASHION_MNIST_CLASSES)
        assert s.images.dtype == torch.uint8 and s.images.shape == (len(x), 1, 28, 28)
        assert torch.equal(s.images[:, 0], torch.from_numpy(x))
        assert s.labels.dtype == torch.int64 and s.labels.tolist() == y.tolist()


def test_idx_header_is_big_endian(tmp_path):
    a = np.arange(2 * 3 * 300, dtype=np.int64).astype(np.uint8).reshape(2, 3, 300)
    data = im.write_idx(tmp_path / "a-idx3-ubyte", a).read_bytes()
    assert data[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 1, 44])
    assert np.array_equal(im.read_idx(tmp_path / "a-idx3-ubyte", 0x803), a)


def test_fashion_mnist_to_tensors_matches_torchvision_to_tensor(tmp_path):
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x, y = fmnist_like(4, 2)
    im.write_fashion_mnist(tmp_path, train=(x, y))
    s = im.load_fashion_mnist("train", data_dir=tmp_path, download=False)
    got, labels = s.to_tensors("cpu")
    for i in range(4):
        assert torch.equal(got[i], tvf.to_tensor(x[i]))
    flat, _ = s.to_tensors("cpu", flatten=True)
    assert flat.shape == (4, 784) and torch.equal(flat[2], tvf.to_tensor(x[2]).reshape(-1))
    assert torch.equal(labels, torch.from_numpy(y.astype(np.int64)))
    double, _ = s.to_tensors("cpu", dtype=torch.float64)
    assert double.dtype == torch.float64 and double.max() <= 1 and torch.allclose(double.float(), got)


@pytest.mark.parametrize("damage", ["truncated", "bad_magic", "broken_gzip"])
def test_corrupt_idx_gives_one_line_naming_the_file(tmp_path, damage):
    x, y = fmnist_like(5, 3)
    raw = im.write_fashion_mnist(tmp_path, train=(x, y), gzip=damage == "broken_gzip")
    name = "train-images-idx3-ubyte" + (".gz" if damage == "broken_gzip" else "")
    path = raw / name
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-100])
    elif damage == "bad_magic":
        path.write_bytes(b"\x00\x00\x08\x01" + data[4:])  # a labels magic on the images file
    else:
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(im.DataCorrupt) as err:
        im.load_fashion_mnist("train", data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg and str(path) in msg


def test_label_count_must_match_images(tmp_path):
    x, y = fmnist_like(5, 4)
    raw = im.write_fashion_mnist(tmp_path, train=(x, y))
    im.write_idx(raw / "train-labels-idx1-ubyte", y[:4])
    with pytest.raises(im.DataCorrupt, match="4 labels for 5 images"):
        im.load_fashion_mnist("train", data_dir=tmp_path, download=False)


def test_cache_returns_fresh_tensors_and_sees_rewritten_files(tmp_path):
    im.write_fashion_mnist(tmp_path, test=fmnist_like(6, 5))
    a = im.load_fashion_mnist("test", data_dir=tmp_path, download=False)
    a.images.zero_()
    b = im.load_fashion_mnist("test", data_dir=tmp_path, download=False)
    assert b.images.sum() > 0  # changing a loaded set does not change the cache
    x, y = fmnist_like(9, 6)
    im.write_fashion_mnist(tmp_path, test=(x, y))
    c = im.load_fashion_mnist("test", data_dir=tmp_path, download=False)
    assert torch.equal(c.images[:, 0], torch.from_numpy(x))


# ---------------------------------------------------------------------------------------------- CIFAR-10

def cifar_planes(n):
    """n images given as separate R, G, B 32x32 planes; R is a known gradient."""
    r = np.arange(32)[:, None] * 7 + np.arange(32)[None, :]  # R[row, col] = 7 row + col (<= 248)
    planes = []
    for i in range(n):
        R = ((r + i) % 256).astype(np.uint8)
        G = (255 - R).astype(np.uint8)
        B = np.full((32, 32), 10 * i, dtype=np.uint8)
        B[0, 31] = 200  # top-right pixel of the blue plane
        planes.append((R, G, B))
    return planes


def hand_built_batch(planes, labels, key):
    """A batch dict in the documented layout, built without pcneuro: per row 1024 R, 1024 G, 1024 B."""
    data = np.stack([np.concatenate([R.ravel(), G.ravel(), B.ravel()]) for R, G, B in planes])
    return {key("batch_label"): "testing batch 1 of 1", key("labels"): list(labels), key("data"): data}


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar_pixel_order_and_scaling_match_torchvision(tmp_path, bytes_keys):
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    planes, labels = cifar_planes(3), [4, 0, 9]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(hand_built_batch(planes, labels, key), f, protocol=2)
    names = [n.encode() if bytes_keys else n for n in im.CIFAR10_CLASSES]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({key("label_names"): names, key("num_vis"): 3072}, f, protocol=2)

    s = im.load_cifar10("test", data_dir=tmp_path, download=False)
    assert s.images.shape == (3, 3, 32, 32) and s.labels.tolist() == labels
    assert s.classes == im.CIFAR10_CLASSES and (s.name, s.split) == ("cifar10", "test")
    assert s.images[1, 0, 5, 3].item() == 7 * 5 + 3 + 1  # R plane, row 5, column 3 of image 1
    assert s.images[2, 1, 31, 0].item() == 255 - (7 * 31 + 2)  # G plane, last row, first column
    assert s.images[2, 2, 0, 31].item() == 200 and s.images[2, 2, 31, 0].item() == 20

    tvf = pytest.importorskip("torchvision.transforms.functional")
    x, _ = s.to_tensors("cpu")
    for i, (R, G, B) in enumerate(planes):
        hwc = np.stack([R, G, B], axis=-1)  # what torchvision's CIFAR10 hands to ToTensor
        assert torch.equal(x[i], tvf.to_tensor(hwc))
    flat, _ = s.to_tensors("cpu", flatten=True)
    assert flat.shape == (3, 3072) and torch.equal(flat[0, :1024], torch.from_numpy(planes[0][0].ravel()) / 255)


@pytest.mark.parametrize("protocol,bytes_keys", [(2, False), (2, True), (4, False), (5, True)])
def test_cifar_writer_round_trip(tmp_path, protocol, bytes_keys):
    g = np.random.default_rng(7)
    train = (g.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8), g.integers(0, 10, 7))
    test = (g.integers(0, 256, (3, 3072), dtype=np.uint8), g.integers(0, 10, 3))
    names = tuple(f"class {i}" for i in range(10))
    folder = im.write_cifar10(tmp_path, train=train, test=test, label_names=names,
                              protocol=protocol, bytes_keys=bytes_keys)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])
    tr = im.load_images("cifar10", "train", data_dir=tmp_path, download=False)
    te = im.load_cifar10("test", data_dir=tmp_path, download=False)
    assert torch.equal(tr.images, torch.from_numpy(train[0])) and tr.labels.tolist() == train[1].tolist()
    assert torch.equal(te.images.reshape(3, -1), torch.from_numpy(test[0])) and te.labels.tolist() == test[1].tolist()
    assert tr.classes == names


def test_cifar_reader_runs_no_code_from_data_files(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    folder = im.write_cifar10(tmp_path, test=(np.zeros((1, 3072), np.uint8), [0]))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f, protocol=2)
    with pytest.raises(im.DataCorrupt) as err:
        im.load_cifar10("test", data_dir=tmp_path, download=False)
    assert not marker.exists()
    assert "refused" in str(err.value) and str(folder / "test_batch") in str(err.value) and "\n" not in str(err.value)


def test_cifar_bad_data_shape_names_the_file(tmp_path):
    folder = im.write_cifar10(tmp_path, test=(np.zeros((2, 3072), np.uint8), [0, 1]))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}, f, protocol=2)
    with pytest.raises(im.DataCorrupt, match="test_batch: CIFAR-10 data must be uint8 of shape"):
        im.load_cifar10("test", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------------------------------------- subsets

def test_balanced_subset_counts_distinct_deterministic():
    labels = torch.tensor([0] * 30 + [1] * 50 + [2] * 3 + [3] * 40)[torch.randperm(123, generator=torch.Generator().manual_seed(0))]
    idx = im.balanced_subset(labels, 10, generator=torch.Generator().manual_seed(1))
    assert idx.dtype == torch.int64 and torch.equal(idx, torch.sort(idx).values)
    assert len(set(idx.tolist())) == len(idx)
    assert torch.bincount(labels[idx]).tolist() == [10, 10, 3, 10]  # class 2 has only 3: all of them
    again = im.balanced_subset(labels, 10, generator=torch.Generator().manual_seed(1))
    other = im.balanced_subset(labels, 10, generator=torch.Generator().manual_seed(2))
    assert torch.equal(idx, again) and not torch.equal(idx, other)

    some = im.balanced_subset(labels, 5, classes=[3, 1], generator=torch.Generator().manual_seed(1))
    assert sorted(set(labels[some].tolist())) == [1, 3] and torch.bincount(labels[some]).tolist() == [0, 5, 0, 5]
    whole = im.balanced_subset(labels, "all", classes=[0, 2])
    assert torch.equal(whole, torch.nonzero((labels == 0) | (labels == 2)).reshape(-1))
    assert torch.equal(im.balanced_subset(labels, 50, classes=[1]), torch.nonzero(labels == 1).reshape(-1))


@pytest.mark.parametrize("bad", [0, -3, "some", 2.5, True])
def test_balanced_subset_rejects_bad_n(bad):
    with pytest.raises(ValueError, match="n_per_class"):
        im.balanced_subset(torch.tensor([0, 1, 1]), bad)


def test_balanced_subset_rejects_absent_class():
    with pytest.raises(ValueError, match="class 7 has no examples"):
        im.balanced_subset(torch.tensor([0, 1, 1]), 1, classes=[1, 7])


def test_subset_and_one_hot(tmp_path):
    x, y = fmnist_like(8, 8)
    im.write_fashion_mnist(tmp_path, train=(x, y))
    s = im.load_fashion_mnist("train", data_dir=tmp_path, download=False)
    sub = s.subset(torch.tensor([6, 1]))
    assert len(sub) == 2 and torch.equal(sub.images[0, 0], torch.from_numpy(x[6])) and sub.labels.tolist() == [y[6], y[1]]
    oh = im.one_hot(torch.tensor([2, 0, 2]), 4, torch.float64)
    assert oh.dtype == torch.float64 and oh.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]]
    with pytest.raises(ValueError, match="label 4 outside 0..3"):
        im.one_hot(torch.tensor([4]), 4)


# ---------------------------------------------------------------------------------------------- data root

def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert im.data_root() == tmp_path / "home" / ".cache" / "pcneuro" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert im.data_root() == tmp_path / "xdg" / "pcneuro" / "data"
    monkeypatch.setenv("PCNEURO_DATA", str(tmp_path / "env"))
    assert im.data_root() == tmp_path / "env"
    with im.data_options(data_dir=tmp_path / "opt"):
        assert im.data_root() == tmp_path / "opt"
        assert im.data_root(tmp_path / "arg") == tmp_path / "arg"
        with im.data_options(download=False):  # nesting keeps the outer data_dir
            assert im.data_root() == tmp_path / "opt" and not im.download_allowed()
        assert im.download_allowed()
        with im.data_options(data_dir=tmp_path / "inner"):
            assert im.data_root() == tmp_path / "inner"
        assert im.data_root() == tmp_path / "opt"
    assert im.data_root() == tmp_path / "env"


def test_download_switch_precedence(monkeypatch):
    assert im.download_allowed()
    monkeypatch.setenv("PCNEURO_NO_DOWNLOAD", "1")
    assert not im.download_allowed()
    with im.data_options(download=True):
        assert im.download_allowed() and not im.download_allowed(False)
    monkeypatch.setenv("PCNEURO_NO_DOWNLOAD", "0")
    assert im.download_allowed()


def test_bad_names_and_splits():
    with pytest.raises(ValueError, match="'mnist': available are fashion_mnist, cifar10"):
        im.load_images("mnist")
    with pytest.raises(ValueError, match="split 'valid'"):
        im.load_cifar10("valid")


# ---------------------------------------------------------------------------------------------- missing data

def test_missing_data_with_download_off(tmp_path, monkeypatch):
    root = tmp_path / "empty"
    monkeypatch.setenv("PCNEURO_NO_DOWNLOAD", "1")
    with pytest.raises(im.DataMissing) as err:
        im.load_fashion_mnist("test", data_dir=root)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and "\n" not in msg
    for part in (str(root / "FashionMNIST" / "raw"), str(im.DEBIAN_FASHION_MNIST), "t10k-images-idx3-ubyte",
                 "--data-dir", "PCNEURO_DATA", "apt-get install dataset-fashion-mnist", "downloading is off"):
        assert part in msg
    with im.data_options(data_dir=root, download=False):
        with pytest.raises(im.DataMissing) as err:
            datasets.load_images("cifar10", "train")
    msg = str(err.value)
    assert "\n" not in msg and str(root / "cifar-10-batches-py") in msg and "data_batch_1..5" in msg
    assert "--data-dir" in msg and "PCNEURO_DATA" in msg
    assert not root.exists()


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10"])
def test_failed_download_gives_data_missing_and_leaves_nothing(tmp_path, monkeypatch, dataset):
    tv_utils = pytest.importorskip("torchvision.datasets.utils")
    calls = []

    def failing(url, *args, **kwargs):  # writes part of a file, then the network "fails"
        folder = kwargs.get("root") or kwargs.get("download_root") or args[0]
        calls.append(url)
        with open(os.path.join(folder, "partial.gz"), "wb") as f:
            f.write(b"\x1f\x8b\x08\x00")
        raise OSError("network unreachable\nsecond line")

    monkeypatch.setattr(tv_utils, "download_url", failing)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", failing)
    root = tmp_path / "new" / "root"
    with pytest.raises(im.DataMissing) as err:
        im.load_images(dataset, "train", data_dir=root, download=True)
    msg = str(err.value)
    assert calls and "\n" not in msg and "download failed" in msg and "network unreachable" in msg
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(im.DataMissing):
        im.load_images(dataset, "test", data_dir=tmp_path / "kept", download=True)
    assert list((tmp_path / "kept").iterdir()) == []


def test_download_moves_complete_files_into_place(tmp_path, monkeypatch):
    tv_datasets = pytest.importorskip("torchvision.datasets")
    tv_utils = pytest.importorskip("torchvision.datasets.utils")
    x, y = fmnist_like(5, 9)
    source = im.write_fashion_mnist(tmp_path / "server", test=(x, y), gzip=True, store_name=False)

    def fake_download_url(url, root, filename=None, md5=None, **kwargs):
        assert url == tv_datasets.FashionMNIST.mirrors[0] + filename and md5 == dict(tv_datasets.FashionMNIST.resources)[filename]
        (source / filename).replace(os.path.join(root, filename))

    def fake_archive(url, download_root, extract_root=None, filename=None, md5=None, **kwargs):
        assert (url, filename, md5) == (tv_datasets.CIFAR10.url, tv_datasets.CIFAR10.filename, tv_datasets.CIFAR10.tgz_md5)
        im.write_cifar10(extract_root, test=(np.full((2, 3072), 9, np.uint8), [3, 4]))

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_archive)
    root = tmp_path / "root"
    s = im.load_fashion_mnist("test", data_dir=root)
    assert torch.equal(s.images[:, 0], torch.from_numpy(x))
    c = im.load_cifar10("test", data_dir=root)
    assert c.labels.tolist() == [3, 4]
    assert sorted(p.name for p in root.iterdir()) == ["FashionMNIST", "cifar-10-batches-py"]
    assert sorted(p.name for p in (root / "FashionMNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


# ---------------------------------------------------------------------------------------------- real data

REAL = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not os.path.isfile(os.path.join(REAL, "train-images-idx3-ubyte.gz")),
                    reason=f"Debian package dataset-fashion-mnist not installed ({REAL} absent): "
                           "apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.setattr(im, "DEBIAN_FASHION_MNIST", Path(REAL))
    train = im.load_fashion_mnist("train", data_dir=tmp_path / "empty", download=False)
    test = im.load_fashion_mnist("test", data_dir=tmp_path / "empty", download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    gz = Path(REAL, "train-images-idx3-ubyte.gz").read_bytes()
    assert not gz[3] & FNAME_FLAG  # the Debian files store no name in their gzip header
    raw = gzip.decompress(gz)
    assert len(raw) == 47_040_016
    independent = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(60000, 28, 28)
    assert torch.equal(train.images[:, 0], torch.from_numpy(independent.copy()))

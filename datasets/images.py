"""Image datasets for the machine-learning benchmarks: Fashion-MNIST and CIFAR-10 readers.

Spec: specs/benchmarks.md §2 ("Datasets and environments (offline)"); used by the Fig. 4 paradigms
(§3.1-3.5). pcneuro reads both datasets itself, so torchvision is optional (only downloads use it):

* **Fashion-MNIST**, IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (plain or ``.gz``),
  looked for under ``<root>/FashionMNIST/raw/`` (torchvision's layout), then in the folder where the
  Debian package ``dataset-fashion-mnist`` installs them (:data:`DEBIAN_FASHION_MNIST`; offline:
  ``apt-get install dataset-fashion-mnist``). IDX = big-endian int32 magic (0x803 images, 0x801
  labels), one int32 per dimension, then the uint8 values. gzip is recognised by its content, so a
  gzip header without a stored file name (the Debian files) reads the same.
* **CIFAR-10**, the pickled "python version": ``<root>/cifar-10-batches-py/{data_batch_1..5,
  test_batch,batches.meta}``. Each batch holds ``data`` (uint8, N x 3072: per row 1024 R, 1024 G,
  1024 B values, each a row-major 32x32 plane) and ``labels``; ``batches.meta`` holds
  ``label_names``. Keys may be str or bytes. Unpickling is restricted (:class:`_ArrayUnpickler`):
  only numpy array reconstruction is allowed, so a data file cannot run code.

Both give an :class:`ImageSet`: uint8 images ``[N, C, H, W]`` (pixel order as torchvision's
``ToTensor`` gives it) and int64 labels. :meth:`ImageSet.to_tensors` scales to [0, 1] as ``ToTensor``
does (x / 255, **no** mean/std normalisation, no augmentation, spec §2). :func:`balanced_subset`
draws the spec's ``subset(split, n_per_class, classes)``.

Where the data live (:func:`data_root`): the ``data_dir`` argument, else the value set with
:func:`data_options` (the CLI's ``--data-dir``), else ``$PCNEURO_DATA``, else a per-user cache folder
``$XDG_CACHE_HOME/pcneuro/data`` (default ``~/.cache/pcneuro/data``). Missing files are downloaded
with torchvision's helpers (URLs and checksums taken from torchvision's dataset classes) unless
downloading is off (``download=False``, :func:`data_options`, the CLI's ``--no-download``, or
``PCNEURO_NO_DOWNLOAD=1``); a download goes to a temporary folder inside the root and is moved into
place only when complete. Data that cannot be found or fetched raise :class:`DataMissing` (a
``FileNotFoundError``; the CLI prints its one-line message and exits with status 2); a malformed file
raises :class:`DataCorrupt` (a ``ValueError``) naming the file.

Parsed files are cached in-process per (path, modification time, size), so repeated loads of the
same split are cheap; every load returns fresh tensors (changing them does not touch the cache).

:func:`write_idx`, :func:`write_fashion_mnist` and :func:`write_cifar10` write the real layouts; they
are for tests and examples that need small generated datasets (the readers here read them).

>>> from pcneuro.datasets import images
>>> with images.data_options(data_dir="/data", download=False):   # doctest: +SKIP
...     train = images.load_fashion_mnist("train")
>>> x, y = train.to_tensors("cpu", flatten=True)                    # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import functools
import gzip as _gzip
import io
import os
import pickle
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "DataMissing", "DataCorrupt", "ImageSet",
    "data_options", "data_root", "download_allowed",
    "load_images", "load_fashion_mnist", "load_cifar10",
    "balanced_subset", "one_hot",
    "read_idx", "write_idx", "write_fashion_mnist", "write_cifar10",
    "IMAGE_DATASETS", "FASHION_MNIST_CLASSES", "CIFAR10_CLASSES", "DEBIAN_FASHION_MNIST", "clear_cache",
]

PathLike = Union[str, os.PathLike]

#: Where the Debian package ``dataset-fashion-mnist`` installs the original ``.gz`` IDX files
#: (``dpkg -L dataset-fashion-mnist``); searched after ``<root>/FashionMNIST/raw``.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

#: Dataset names accepted by :func:`load_images`.
IMAGE_DATASETS = ("fashion_mnist", "cifar10")
SPLITS = ("train", "test")

_FMNIST_DIR = ("FashionMNIST", "raw")
_FMNIST_PREFIX = {"train": "train", "test": "t10k"}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_CIFAR_META = "batches.meta"
_IDX_IMAGES, _IDX_LABELS = 0x803, 0x801
_GZIP_MAGIC = b"\x1f\x8b"


class DataMissing(FileNotFoundError):
    """A dataset's files are not where pcneuro looked and could not be downloaded (one-line message:
    the dataset, the folder(s) searched, the layout expected and how to provide the files)."""


class DataCorrupt(ValueError):
    """A dataset file exists but is not in the expected format (one-line message naming the file)."""


# ----------------------------------------------------------------------------------------------
# where the data live
# ----------------------------------------------------------------------------------------------

_OPTIONS = {"data_dir": None, "download": None}


@contextlib.contextmanager
def data_options(data_dir: Optional[PathLike] = None, download: Optional[bool] = None) -> Iterator[None]:
    """Set, for this process and the duration of the ``with`` block, the defaults the loaders use:
    ``data_dir`` (the data root) and ``download`` (whether missing files may be downloaded). ``None``
    leaves a value as it is; leaving the block restores the previous values (blocks nest). The
    command line wraps a simulation in it for ``--data-dir`` and ``--no-download``."""
    if download is not None and not isinstance(download, bool):
        raise ValueError(f"data_options(download={download!r}): need True, False or None")
    saved = dict(_OPTIONS)
    if data_dir is not None:
        _OPTIONS["data_dir"] = Path(data_dir).expanduser()
    if download is not None:
        _OPTIONS["download"] = download
    try:
        yield
    finally:
        _OPTIONS.clear()
        _OPTIONS.update(saved)


def data_root(data_dir: Optional[PathLike] = None) -> Path:
    """The data root: ``data_dir``, else the :func:`data_options` value, else ``$PCNEURO_DATA``, else
    ``$XDG_CACHE_HOME/pcneuro/data`` (``~/.cache/pcneuro/data`` when XDG_CACHE_HOME is unset or
    relative). The folder is not created here."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if _OPTIONS["data_dir"] is not None:
        return Path(_OPTIONS["data_dir"])
    env = os.environ.get("PCNEURO_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return base / "pcneuro" / "data"


def download_allowed(download: Optional[bool] = None) -> bool:
    """Whether missing files may be downloaded: ``download``, else the :func:`data_options` value,
    else False when ``$PCNEURO_NO_DOWNLOAD`` is set to anything but ``""``/``0``/``false``/``no``,
    else True."""
    if download is not None:
        return bool(download)
    if _OPTIONS["download"] is not None:
        return bool(_OPTIONS["download"])
    return os.environ.get("PCNEURO_NO_DOWNLOAD", "").strip().lower() in ("", "0", "false", "no")


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: need 'train' or 'test'")
    return split


# ----------------------------------------------------------------------------------------------
# the data as tensors
# ----------------------------------------------------------------------------------------------

@dataclass
class ImageSet:
    """One split of an image dataset held in memory.

    ``images``: uint8 tensor ``[N, C, H, W]`` (channels first, as torchvision's ``ToTensor`` orders
    them); ``labels``: int64 tensor ``[N]``; ``classes``: class names, index = label; ``name``:
    ``"fashion_mnist"`` or ``"cifar10"`` (or your own); ``split``: ``"train"`` or ``"test"``."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: Tuple[str, ...]
    name: str
    split: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageSet {self.name}: images must be uint8 [N, C, H, W], "
                             f"got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"ImageSet {self.name}: labels must be int64 [{self.images.shape[0]}], "
                             f"got {self.labels.dtype} {tuple(self.labels.shape)}")
        self.classes = tuple(self.classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def to_tensors(self, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32,
                   flatten: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, labels)`` on ``device``: x = images / 255 in ``dtype`` (``ToTensor`` scaling only; no
        normalisation), ``[N, C, H, W]`` or, with ``flatten``, ``[N, C*H*W]`` (784 for
        Fashion-MNIST, in the order ``x.view(N, -1)`` gives); labels int64 ``[N]``."""
        if not dtype.is_floating_point:
            raise ValueError(f"to_tensors(dtype={dtype}): need a floating-point dtype")
        x = self.images.to(device).to(dtype).div_(255)
        if flatten:
            x = x.reshape(x.shape[0], -1)
        return x, self.labels.to(device)

    def subset(self, indices) -> "ImageSet":
        """The examples at ``indices`` (any index a tensor accepts, e.g. from :func:`balanced_subset`),
        in that order, as a new ImageSet."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name, self.split)


def one_hot(labels, n_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot 0/1 targets ``[N, n_classes]`` in ``dtype`` on the labels' device (spec §1.2; build them
    after any label remapping)."""
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1:
        raise ValueError(f"one_hot: labels must be a 1-D integer tensor, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if n_classes < 1:
        raise ValueError(f"one_hot: n_classes {n_classes}: need at least 1")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(f"one_hot: label {bad} outside 0..{n_classes - 1}")
    out = torch.zeros(labels.shape[0], n_classes, dtype=dtype, device=labels.device)
    out[torch.arange(labels.shape[0], device=labels.device), labels.long()] = 1
    return out


def balanced_subset(labels, n_per_class: Union[int, str], classes: Optional[Sequence[int]] = None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Indices of ``n_per_class`` random distinct examples of each class in ``classes`` (default: every
    class present in ``labels``), spec §2 "Subsets". ``"all"``, or n at least the class size, takes
    every example of the class (exactly, spec §5 Q1).

    Order and determinism: classes are visited in the order given (default ascending); a class that
    is sampled consumes one ``torch.randperm(class size, generator=generator)`` draw and keeps the
    examples at its first n positions; a class taken whole consumes nothing. The result is a CPU int64
    tensor of the chosen indices **sorted ascending**, so the same labels, arguments and generator
    state give the same indices (seed-paired PC/BP runs, spec §1.4)."""
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"balanced_subset: labels must be integers, got {labels.dtype}")
    if isinstance(n_per_class, str):
        if n_per_class != "all":
            raise ValueError(f"balanced_subset: n_per_class {n_per_class!r}: need a positive integer or 'all'")
        n = None
    else:
        if isinstance(n_per_class, bool) or int(n_per_class) != n_per_class or n_per_class < 1:
            raise ValueError(f"balanced_subset: n_per_class {n_per_class!r}: need a positive integer or 'all'")
        n = int(n_per_class)
    if classes is None:
        classes = torch.unique(labels).tolist()
    chosen = []
    seen = set()
    for c in classes:
        c = int(c)
        if c in seen:
            raise ValueError(f"balanced_subset: class {c} listed twice")
        seen.add(c)
        where = torch.nonzero(labels == c).reshape(-1)
        if where.numel() == 0:
            raise ValueError(f"balanced_subset: class {c} has no examples")
        if n is None or n >= where.numel():
            chosen.append(where)
        else:
            chosen.append(where[torch.randperm(where.numel(), generator=generator)[:n]])
    if not chosen:
        return torch.zeros(0, dtype=torch.long)
    return torch.sort(torch.cat(chosen)).values


# ----------------------------------------------------------------------------------------------
# IDX (Fashion-MNIST)
# ----------------------------------------------------------------------------------------------

def _file_key(path: Path) -> Tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if it is gzip (recognised by content, stored name or not)."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return _gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataCorrupt(f"{path}: broken gzip data ({_one_line(exc)})") from None


def read_idx(path: PathLike, magic: Optional[int] = None) -> np.ndarray:
    """The uint8 array stored in an IDX file (plain or gzip). ``magic`` (e.g. 0x803 for images, 0x801
    for labels) is checked when given. The result is cached per (path, mtime, size) and read-only:
    copy it before changing it. A malformed file raises :class:`DataCorrupt` naming it."""
    path = Path(path)
    array = _read_idx_cached(*_file_key(path))
    if magic is not None and (0x800 | array.ndim) != magic:
        raise DataCorrupt(f"{path}: IDX magic {0x800 | array.ndim:#x}, expected {magic:#x}")
    return array


@functools.lru_cache(maxsize=32)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    data = _read_bytes(Path(path))
    if len(data) < 4:
        raise DataCorrupt(f"{path}: not an IDX file (only {len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    ndim = data[3]
    if data[:2] != b"\x00\x00" or data[2] != 0x08 or ndim == 0:
        raise DataCorrupt(f"{path}: not a uint8 IDX file (magic {magic:#010x}; expected 0x00000801 or 0x00000803)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataCorrupt(f"{path}: IDX header cut short ({len(data)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if any(d < 0 for d in dims) or len(data) != expected:
        raise DataCorrupt(f"{path}: IDX size mismatch: header says {dims} ({expected} bytes), file has {len(data)}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    array.flags.writeable = False
    return array


def write_idx(path: PathLike, array, gzip: bool = False, store_name: bool = True) -> Path:
    """Write a uint8 array (numpy or torch, 1 to 4 dims) as an IDX file; for tests and examples.
    ``gzip`` compresses it; ``store_name=False`` writes a gzip header without the file name (as the
    Debian package's files have). Parent folders are created. Returns the path."""
    path = Path(path)
    array = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 4:
        raise ValueError(f"write_idx {path}: need a uint8 array with 1 to 4 dims, got {array.dtype} {array.shape}")
    payload = (bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
               + np.ascontiguousarray(array).tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    if not gzip:
        path.write_bytes(payload)
        return path
    with open(path, "wb") as f:
        with _gzip.GzipFile(filename=path.name if store_name else "", mode="wb", fileobj=f, mtime=0) as gz:
            gz.write(payload)
    return path


def write_fashion_mnist(root: PathLike, train=None, test=None, gzip: bool = False,
                        store_name: bool = True) -> Path:
    """Write ``(images, labels)`` pairs as Fashion-MNIST IDX files under ``<root>/FashionMNIST/raw/``;
    for tests and examples. images: uint8 ``[N, 28, 28]`` or ``[N, 1, 28, 28]`` (any H x W is
    written; the benchmark MLPs expect 28 x 28); labels: N ints in 0..255. Returns the raw folder."""
    folder = Path(root).joinpath(*_FMNIST_DIR)
    suffix = ".gz" if gzip else ""
    for split, pair in (("train", train), ("test", test)):
        if pair is None:
            continue
        images, labels = (_as_uint8(p, f"write_fashion_mnist {split}") for p in pair)
        if images.ndim == 4 and images.shape[1] == 1:
            images = images[:, 0]
        if images.ndim != 3 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"write_fashion_mnist {split}: need images [N, H, W] and labels [N], "
                             f"got {images.shape} and {labels.shape}")
        prefix = _FMNIST_PREFIX[split]
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gzip=gzip, store_name=store_name)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gzip=gzip, store_name=store_name)
    return folder


def _as_uint8(value, what: str) -> np.ndarray:
    array = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer) or array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{what}: need uint8 values (0..255), got {array.dtype}")
        array = array.astype(np.uint8)
    return array


def _fmnist_names(split: str) -> Tuple[str, str]:
    prefix = _FMNIST_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find_fmnist(folder: Path, split: str) -> Optional[Tuple[Path, Path]]:
    """(images, labels) files of ``split`` in ``folder``, plain preferred over .gz; None if incomplete."""
    found = []
    for base in _fmnist_names(split):
        for name in (base, base + ".gz"):
            if (folder / name).is_file():
                found.append(folder / name)
                break
        else:
            return None
    return found[0], found[1]


def load_fashion_mnist(split: str = "train", data_dir: Optional[PathLike] = None,
                       download: Optional[bool] = None) -> ImageSet:
    """Fashion-MNIST ``split`` ("train": 60,000, "test": 10,000 images, 1 x 28 x 28) as an
    :class:`ImageSet`. Looks in ``<root>/FashionMNIST/raw/`` (see :func:`data_root`), then in
    :data:`DEBIAN_FASHION_MNIST`, then downloads into the root if allowed; else :class:`DataMissing`."""
    _check_split(split)
    root = data_root(data_dir)
    raw = root.joinpath(*_FMNIST_DIR)
    files = _find_fmnist(raw, split) or _find_fmnist(DEBIAN_FASHION_MNIST, split)
    if files is None:
        names = _fmnist_names(split)
        where = (f"Fashion-MNIST {split} split not found: looked in {raw} and {DEBIAN_FASHION_MNIST} for "
                 f"{names[0]} and {names[1]} (plain or .gz)")
        how = ("put the IDX files in <data root>/FashionMNIST/raw/ and point --data-dir or PCNEURO_DATA at "
               "that data root{}, or run `apt-get install dataset-fashion-mnist`")
        if not download_allowed(download):
            raise DataMissing(f"{where}; downloading is off; " + how.format(", allow downloads"))
        how = how.format("")
        _download_fmnist(root, raw, split, where, how)
        files = _find_fmnist(raw, split)
        if files is None:  # pragma: no cover - the download helper reported success but left no files
            raise DataMissing(f"{where}; the download left no files; {how}")
    images = read_idx(files[0], _IDX_IMAGES)
    labels = read_idx(files[1], _IDX_LABELS)
    if images.shape[0] != labels.shape[0]:
        raise DataCorrupt(f"{files[1]}: {labels.shape[0]} labels for {images.shape[0]} images in {files[0]}")
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataCorrupt(f"{files[1]}: label {int(labels.max())} outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
    return ImageSet(images=torch.from_numpy(images[:, None].copy()),
                    labels=torch.from_numpy(labels.astype(np.int64)),
                    classes=FASHION_MNIST_CLASSES, name="fashion_mnist", split=split)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 (pickled batches)
# ----------------------------------------------------------------------------------------------

def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, limited to latin-1."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1", errors)


def _numpy_globals() -> dict:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: ``find_class`` resolves numpy's array
    reconstruction names (``numpy[._]core.multiarray._reconstruct``, ``numpy[._]core.numeric._frombuffer``,
    ``numpy.ndarray``, ``numpy.dtype``) and latin-1 ``_codecs.encode`` (bytes in protocol-2 pickles);
    anything else is refused, so a data file cannot run code."""

    _ALLOWED = None

    def find_class(self, module, name):
        if _ArrayUnpickler._ALLOWED is None:
            _ArrayUnpickler._ALLOWED = _numpy_globals()
        try:
            return _ArrayUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} (only numpy arrays are allowed)") from None


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # whatever a malformed or refused pickle raises
        raise DataCorrupt(f"{path}: not a CIFAR-10 pickle ({_one_line(exc)})") from None
    if not isinstance(obj, dict):
        raise DataCorrupt(f"{path}: not a CIFAR-10 pickle (holds {type(obj).__name__}, expected a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


@functools.lru_cache(maxsize=32)
def _read_cifar_batch(path: str, mtime_ns: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(Path(path))
    if "data" not in batch or "labels" not in batch:
        raise DataCorrupt(f"{path}: CIFAR-10 batch lacks {'data' if 'data' not in batch else 'labels'}")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataCorrupt(f"{path}: CIFAR-10 data must be uint8 of shape (N, 3072), got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataCorrupt(f"{path}: CIFAR-10 labels are not integers") from None
    if labels.shape[0] != data.shape[0]:
        raise DataCorrupt(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise DataCorrupt(f"{path}: CIFAR-10 label outside 0..9")
    data = data.reshape(-1, 3, 32, 32)  # 1024 R, 1024 G, 1024 B, each a row-major 32 x 32 plane
    data.flags.writeable = False
    labels.flags.writeable = False
    return data, labels


@functools.lru_cache(maxsize=8)
def _read_cifar_meta(path: str, mtime_ns: int, size: int) -> Tuple[str, ...]:
    meta = _unpickle(Path(path))
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != len(CIFAR10_CLASSES):
        raise DataCorrupt(f"{path}: batches.meta needs label_names, a list of {len(CIFAR10_CLASSES)} names")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)


def _cifar_files(split: str) -> Tuple[str, ...]:
    return (*_CIFAR_BATCHES[split], _CIFAR_META)


def load_cifar10(split: str = "train", data_dir: Optional[PathLike] = None,
                 download: Optional[bool] = None) -> ImageSet:
    """CIFAR-10 ``split`` ("train": 50,000, "test": 10,000 RGB images, 3 x 32 x 32) as an
    :class:`ImageSet`, read from ``<root>/cifar-10-batches-py/`` (see :func:`data_root`) with pcneuro's
    own restricted reader (torchvision's CIFAR10 md5-checks every file, so it rejects generated data);
    pixel order and scaling match torchvision's ``CIFAR10`` + ``ToTensor``. Missing files are
    downloaded into the root if allowed; else :class:`DataMissing`."""
    _check_split(split)
    root = data_root(data_dir)
    folder = root / _CIFAR_DIR
    missing = [n for n in _cifar_files(split) if not (folder / n).is_file()]
    if missing:
        batches = "data_batch_1..5" if split == "train" else "test_batch"
        where = (f"CIFAR-10 {split} split not found: looked in {folder} for {batches} and batches.meta "
                 f"(the python version of CIFAR-10; missing {', '.join(missing)})")
        how = "unpack cifar-10-python.tar.gz in a data root and point --data-dir or PCNEURO_DATA at it"
        if not download_allowed(download):
            raise DataMissing(f"{where}; downloading is off; {how}, or allow downloads")
        _download_cifar(root, folder, where, how)
        if any(not (folder / n).is_file() for n in _cifar_files(split)):
            raise DataMissing(f"{where}; the downloaded archive lacks them; {how}")
    parts = [_read_cifar_batch(*_file_key(folder / n)) for n in _CIFAR_BATCHES[split]]
    classes = _read_cifar_meta(*_file_key(folder / _CIFAR_META))
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0].copy()
    labels = np.concatenate([p[1] for p in parts])
    return ImageSet(images=torch.from_numpy(images), labels=torch.from_numpy(labels),
                    classes=classes, name="cifar10", split=split)


def write_cifar10(folder: PathLike, train=None, test=None, label_names: Sequence[str] = CIFAR10_CLASSES,
                  bytes_keys: bool = False, protocol: int = 2) -> Path:
    """Write a CIFAR-10 "python version" layout; for tests and examples. Files go to
    ``<folder>/cifar-10-batches-py/`` (or into ``folder`` itself if it is named so): the ``train``
    pair split over ``data_batch_1..5`` as in the real set (some batches may be empty when N < 5),
    the ``test`` pair as ``test_batch``, and ``batches.meta`` with ``label_names``.

    Each pair is ``(images, labels)``: uint8 images ``[N, 3, 32, 32]`` (channels first, as
    :class:`ImageSet` holds them) or ``[N, 3072]``, and N labels in 0..9. ``bytes_keys`` writes bytes
    dict keys; ``protocol`` is the pickle protocol (2, as the real Python 2 files). Returns the
    ``cifar-10-batches-py`` folder."""
    folder = Path(folder)
    if folder.name != _CIFAR_DIR:
        folder = folder / _CIFAR_DIR
    if len(label_names) != len(CIFAR10_CLASSES):
        raise ValueError(f"write_cifar10: label_names has {len(label_names)} names, need {len(CIFAR10_CLASSES)}")
    folder.mkdir(parents=True, exist_ok=True)
    key = (lambda k: k.encode("latin1")) if bytes_keys else (lambda k: k)

    def dump(name: str, obj: dict) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump({key(k): v for k, v in obj.items()}, f, protocol=protocol)

    for split, pair in (("train", train), ("test", test)):
        if pair is None:
            continue
        images, labels = _as_uint8(pair[0], f"write_cifar10 {split} images"), np.asarray(pair[1])
        images = images.reshape(images.shape[0], -1) if images.ndim == 4 else images
        if images.ndim != 2 or images.shape[1] != 3072 or labels.shape != (images.shape[0],):
            raise ValueError(f"write_cifar10 {split}: need images [N, 3, 32, 32] or [N, 3072] and labels [N], "
                             f"got {tuple(np.shape(pair[0]))} and {labels.shape}")
        names = _CIFAR_BATCHES[split]
        for i, rows in enumerate(np.array_split(np.arange(images.shape[0]), len(names))):
            label = (f"training batch {i + 1} of {len(names)}" if split == "train" else "testing batch 1 of 1")
            dump(names[i], {"batch_label": label, "labels": [int(v) for v in labels[rows]],
                            "data": np.ascontiguousarray(images[rows]),
                            "filenames": [f"image_{int(r)}.png" for r in rows]})
    dump(_CIFAR_META, {"num_cases_per_batch": 10000, "label_names": [str(n) for n in label_names],
                       "num_vis": 3072})
    return folder


# ----------------------------------------------------------------------------------------------
# dispatch, downloads, cache
# ----------------------------------------------------------------------------------------------

def load_images(name: str, split: str = "train", data_dir: Optional[PathLike] = None,
                download: Optional[bool] = None) -> ImageSet:
    """Load ``split`` of dataset ``name`` ("fashion_mnist" or "cifar10")."""
    loaders = {"fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10}
    if name not in loaders:
        raise ValueError(f"image dataset {name!r}: available are {', '.join(IMAGE_DATASETS)}")
    return loaders[name](split, data_dir=data_dir, download=download)


def clear_cache() -> None:
    """Forget the parsed files cached in this process."""
    _read_idx_cached.cache_clear()
    _read_cifar_batch.cache_clear()
    _read_cifar_meta.cache_clear()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def _staging(root: Path, where: str, how: str) -> Iterator[Path]:
    """A temporary folder inside ``root`` for a download; removed afterwards together with any folders
    created for it that stayed empty. A failure becomes :class:`DataMissing` (one line)."""
    created = [p for p in (root, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    except OSError as exc:
        raise DataMissing(f"{where}; cannot download into {root} ({_one_line(exc)}); {how}") from None
    ok = False
    try:
        yield tmp
        ok = True
    except Exception as exc:  # any failure of the download helper: no network, bad checksum, ...
        raise DataMissing(f"{where}; download failed ({_one_line(exc)}); {how}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for p in created:  # deepest first
                try:
                    p.rmdir()
                except OSError:
                    break


def _torchvision(where: str, how: str):
    try:
        import torchvision.datasets as tv_datasets
        import torchvision.datasets.utils as tv_utils
    except ImportError:
        raise DataMissing(f"{where}; downloading needs torchvision, which is not installed; {how}") from None
    return tv_datasets, tv_utils


def _download_fmnist(root: Path, raw: Path, split: str, where: str, how: str) -> None:
    """Fetch the split's two .gz files with torchvision's ``download_url`` (URLs and md5 sums from
    ``torchvision.datasets.FashionMNIST``) into a staging folder, then move them into ``raw``."""
    tv_datasets, tv_utils = _torchvision(where, how)
    cls = tv_datasets.FashionMNIST
    md5 = dict(cls.resources)
    wanted = [n + ".gz" for n in _fmnist_names(split)]
    with _staging(root, where, how) as tmp:
        for filename in wanted:
            errors = []
            for mirror in cls.mirrors:
                try:
                    tv_utils.download_url(f"{mirror}{filename}", root=str(tmp), filename=filename,
                                          md5=md5.get(filename))
                    break
                except Exception as exc:  # try the next mirror
                    errors.append(_one_line(exc))
                    (tmp / filename).unlink(missing_ok=True)
            else:
                raise RuntimeError(f"{filename}: " + "; ".join(errors or ["no mirrors"]))
        raw.mkdir(parents=True, exist_ok=True)
        for filename in wanted:
            os.replace(tmp / filename, raw / filename)


def _download_cifar(root: Path, folder: Path, where: str, how: str) -> None:
    """Fetch and unpack torchvision's CIFAR-10 archive (``torchvision.datasets.CIFAR10.url``,
    ``filename``, ``tgz_md5``) in a staging folder, then move the batch files into ``folder``
    (files already there are kept)."""
    tv_datasets, tv_utils = _torchvision(where, how)
    cls = tv_datasets.CIFAR10
    with _staging(root, where, how) as tmp:
        tv_utils.download_and_extract_archive(cls.url, download_root=str(tmp), extract_root=str(tmp / "x"),
                                              filename=cls.filename, md5=cls.tgz_md5)
        unpacked = tmp / "x" / cls.base_folder
        if not unpacked.is_dir():
            raise RuntimeError(f"the archive holds no {cls.base_folder} folder")
        folder.mkdir(parents=True, exist_ok=True)
        for item in unpacked.iterdir():
            if item.is_file() and not (folder / item.name).exists():
                os.replace(item, folder / item.name)

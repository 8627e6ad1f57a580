"""Image data sets read from local files: Fashion-MNIST, CIFAR-10 and image-folder trees.

Nothing is ever downloaded. Each loader reads one standard on-disk format, checks it
thoroughly and returns an :class:`ImageDataset` of ``uint8`` images ``[N, C, H, W]``
and ``int64`` labels ``[N]``:

* :func:`load_fashion_mnist` -- the IDX files (gzipped or not) as installed by the
  Debian package ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``
  (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``).
* :func:`load_cifar10` -- the official "CIFAR-10 python version" batches
  (``cifar-10-batches-py/data_batch_1`` ... ``test_batch``, ``batches.meta``), read
  with a restricted unpickler that can only build ``numpy`` ``uint8`` arrays, so a
  tampered file cannot run code.
* :func:`load_image_folder` -- ``root/<split>/<class>/*.png|jpg|jpeg`` read with Pillow.

:func:`load_dataset` dispatches on a name. Missing files raise
:class:`DatasetNotFoundError` (a :class:`FileNotFoundError`), malformed ones
:class:`DatasetCorruptError` (a :class:`ValueError`); both derive from
:class:`DatasetError` and their messages say what was looked for, where, what is wrong
and how to obtain the data.
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "DatasetCorruptError",
    "DatasetError",
    "DatasetNotFoundError",
    "ImageDataset",
    "UnsafePickleError",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
]

Split = Literal["train", "test"]

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""The ten Fashion-MNIST class names, in label order."""

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
"""The ten CIFAR-10 class names, in label order (as in ``batches.meta``)."""

DATASET_NAMES: tuple[str, ...] = ("fashion-mnist", "cifar10", "cifar10-folder")
"""The names accepted by :func:`load_dataset`."""

_NOTHING_DOWNLOADED = "Nothing is downloaded at run time."
_FASHION_MNIST_HELP = (
    "Install it with `sudo apt-get install dataset-fashion-mnist` (files go to "
    f"{DEFAULT_FASHION_MNIST_DIR}), or download the four IDX files from "
    "https://github.com/zalandoresearch/fashion-mnist and pass --data-dir. " + _NOTHING_DOWNLOADED
)
_CIFAR10_HELP = (
    'Download "CIFAR-10 python version" (cifar-10-python.tar.gz) from '
    "https://www.cs.toronto.edu/~kriz/cifar.html, extract it with "
    "`tar xzf cifar-10-python.tar.gz` and pass --data-dir pointing at the folder that "
    "contains cifar-10-batches-py/ (or at cifar-10-batches-py/ itself). " + _NOTHING_DOWNLOADED
)
_FOLDER_HELP = (
    "Expected a tree root/<split>/<class>/*.png|jpg|jpeg; pass its root as --data-dir. "
    + _NOTHING_DOWNLOADED
)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# --------------------------------------------------------------------------- errors


class DatasetError(Exception):
    """Base class of every data-set loading error raised by this module.

    Catch this to handle both missing and malformed data; catch
    :class:`FileNotFoundError` or :class:`ValueError` to handle only one kind.
    """


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data-set folder or file does not exist.

    The message names what was looked for, where, and how to obtain the data.
    """


class DatasetCorruptError(DatasetError, ValueError):
    """A data-set file exists but its content is malformed or inconsistent.

    The message names the file and what is wrong with it.
    """


class UnsafePickleError(DatasetCorruptError):
    """A pickle asked for a global that the restricted unpickler does not allow.

    The refused global is never imported nor called.
    """


# --------------------------------------------------------------------------- container


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """An in-memory labelled image data set.

    Equality is identity (``eq=False``): comparing tensors element-wise has no single
    truth value. ``repr`` shows a summary, not the pixels.

    Attributes:
        images: ``uint8`` tensor ``[N, C, H, W]``.
        labels: ``int64`` tensor ``[N]`` with values in ``[0, len(classes))``.
        classes: class names; ``classes[k]`` is the name of label ``k``. Any sequence of
            strings is accepted and stored as a tuple.
        name: a short identifier such as ``"fashion-mnist-train"``.

    Raises:
        TypeError: ``images`` or ``labels`` is not a tensor of the right dtype, ``classes``
            is not a sequence of strings, or ``name`` is not a string.
        ValueError: wrong number of dimensions, ``N`` differs between images and labels,
            no or duplicate class names, an empty name, or a label out of range.

    Examples:
        >>> ds = ImageDataset(
        ...     images=torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
        ...     labels=torch.tensor([0, 1, 1, 0]),
        ...     classes=("a", "b"),
        ...     name="toy",
        ... )
        >>> len(ds), ds.image_shape, ds.num_classes
        (4, (1, 2, 2), 2)
        >>> ds.float().dtype
        torch.float32
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dtype != torch.uint8:
            raise TypeError(f"images must have dtype torch.uint8, got {images.dtype}")
        if images.dim() != 4:
            raise ValueError(
                f"images must have shape [N, C, H, W], got {images.dim()} dimensions "
                f"{tuple(images.shape)}"
            )
        if min(images.shape[1:]) < 1:
            raise ValueError(f"images must have C, H, W >= 1, got shape {tuple(images.shape)}")
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.dtype != torch.int64:
            raise TypeError(f"labels must have dtype torch.int64, got {labels.dtype}")
        if labels.dim() != 1:
            raise ValueError(f"labels must have shape [N], got {tuple(labels.shape)}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{images.shape[0]} images but {labels.shape[0]} labels; they must match"
            )
        classes = self.classes
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            raise TypeError(f"classes must be a sequence of strings, got {type(classes).__name__}")
        classes = tuple(classes)
        if not classes:
            raise ValueError("classes must not be empty")
        bad = [c for c in classes if not isinstance(c, str)]
        if bad:
            raise TypeError(f"class names must be strings, got {bad[0]!r}")
        if len(set(classes)) != len(classes):
            dupes = sorted({c for c in classes if classes.count(c) > 1})
            raise ValueError(f"class names must be unique, duplicated: {dupes}")
        object.__setattr__(self, "classes", classes)
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a string, got {type(self.name).__name__}")
        if not self.name:
            raise ValueError("name must not be empty")
        if labels.numel():
            out = (labels < 0) | (labels >= len(classes))
            if bool(out.any()):
                i = int(out.nonzero()[0, 0])
                raise ValueError(
                    f"label {int(labels[i])} at index {i} is out of range: labels must lie "
                    f"in [0, {len(classes)}) for {len(classes)} classes"
                )

    def __len__(self) -> int:
        """Number of images ``N``."""
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, classes={len(self.classes)})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """``len(classes)``."""
        return len(self.classes)

    def float(self) -> torch.Tensor:
        """The images as ``float32`` in ``[0, 1]`` (pixel value / 255).

        Returns:
            A new ``float32`` tensor ``[N, C, H, W]`` on the images' device.

        Examples:
            >>> ds = ImageDataset(torch.full((1, 1, 1, 2), 255, dtype=torch.uint8),
            ...                   torch.tensor([0]), ("a",), "toy")
            >>> ds.float()
            tensor([[[[1., 1.]]]])
        """
        return self.images.to(torch.float32).div_(255.0)

    def subset(self, n: int, generator: torch.Generator | int | None = None) -> ImageDataset:
        """A random subset of ``n`` distinct images, e.g. for quick runs.

        The chosen images keep their original relative order; ``classes`` and ``name`` are
        unchanged.

        Args:
            n: number of images to keep, ``1 <= n <= len(self)``.
            generator: a :class:`torch.Generator`, an integer seed, or ``None`` for torch's
                global random state. The same seed gives the same subset.

        Returns:
            A new :class:`ImageDataset` with copies of the selected images and labels.

        Raises:
            TypeError: ``n`` is not an integer, or ``generator`` has the wrong type.
            ValueError: ``n`` is out of range.

        Examples:
            >>> ds = ImageDataset(torch.zeros(10, 1, 2, 2, dtype=torch.uint8),
            ...                   torch.arange(10) % 2, ("a", "b"), "toy")
            >>> small = ds.subset(3, generator=0)
            >>> len(small), bool((small.labels == ds.subset(3, generator=0).labels).all())
            (3, True)
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        if not 1 <= n <= len(self):
            raise ValueError(f"n must be in [1, {len(self)}] for data set {self.name!r}, got {n}")
        if isinstance(generator, bool):
            raise TypeError("generator must be a torch.Generator, an int seed or None, got bool")
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                "generator must be a torch.Generator, an int seed or None, "
                f"got {type(generator).__name__}"
            )
        idx = torch.randperm(len(self), generator=generator)[:n].sort().values
        idx = idx.to(self.images.device)
        return ImageDataset(
            images=self.images.index_select(0, idx),
            labels=self.labels.index_select(0, idx.to(self.labels.device)),
            classes=self.classes,
            name=self.name,
        )

    def split(self, n: int, seed: int) -> tuple[ImageDataset, ImageDataset]:
        """Two disjoint parts: ``n`` seeded random images (e.g. validation) and the rest.

        Both keep the original relative order, so the rest is the same images
        in the same order for a given ``(n, seed)``, and a later :meth:`subset`
        of it is too.

        Raises:
            ValueError: unless ``1 <= n < len(self)``.

        Examples:
            >>> ds = ImageDataset(torch.zeros(10, 1, 2, 2, dtype=torch.uint8),
            ...                   torch.arange(10) % 2, ("a", "b"), "toy")
            >>> held, rest = ds.split(3, seed=0)
            >>> len(held), len(rest)
            (3, 7)
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < len(self):
            raise ValueError(f"a split of {self.name!r} needs 1 <= n < {len(self)} images held "
                             f"out, got {n!r}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        mask = torch.zeros(len(self), dtype=torch.bool)
        mask[order[:n]] = True
        parts = []
        for keep in (mask, ~mask):
            idx = keep.nonzero().flatten()
            parts.append(ImageDataset(self.images.index_select(0, idx.to(self.images.device)),
                                      self.labels.index_select(0, idx.to(self.labels.device)),
                                      self.classes, self.name))
        return parts[0], parts[1]


# --------------------------------------------------------------------------- helpers


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _as_dir(data_dir: str | Path, what: str, help_text: str) -> Path:
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"{what}: data directory {path} does not exist. {help_text}")
    if not path.is_dir():
        raise DatasetNotFoundError(f"{what}: {path} is not a directory. {help_text}")
    return path


# --------------------------------------------------------------------------- Fashion-MNIST

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def _idx_candidates(split: str, kind: str) -> list[str]:
    """File names tried for one IDX file, in order of preference."""
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    idx = "idx3" if kind == "images" else "idx1"
    names = []
    for prefix in prefixes:
        for sep in ("-", "."):  # ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``
            base = f"{prefix}-{kind}{sep}{idx}-ubyte"
            names += [base, base + ".gz"]
    return names


def _read_idx_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DatasetCorruptError(
            f"{path} is not a valid gzip file ({e}); it may be truncated or damaged. "
            + _FASHION_MNIST_HELP
        ) from e


def _read_idx(path: Path, magic: int, what: str) -> np.ndarray:
    """Read an IDX ``uint8`` file and check its magic number and byte count.

    Args:
        path: the file (``.gz`` suffix means gzip-compressed).
        magic: the expected magic number, 2051 (images, 3-D) or 2049 (labels, 1-D).
        what: a description of the file for error messages.

    Returns:
        The array, shaped as the header says.

    Raises:
        DatasetCorruptError: bad gzip stream, wrong magic, or a byte count that does not
            match the header.
    """
    data = _read_idx_bytes(path)
    ndim = magic & 0xFF
    if len(data) < 4:
        raise DatasetCorruptError(
            f"{what} file {path} is truncated: {len(data)} bytes, too short for an IDX header. "
            + _FASHION_MNIST_HELP
        )
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise DatasetCorruptError(
            f"{what} file {path} has wrong magic number {found} (0x{found:08x}); expected "
            f"{magic} (0x{magic:08x}, IDX unsigned bytes with {ndim} dimension"
            f"{'s' if ndim > 1 else ''}). Is it the right file? " + _FASHION_MNIST_HELP
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetCorruptError(
            f"{what} file {path} is truncated: {len(data)} bytes, shorter than its "
            f"{header}-byte IDX header. " + _FASHION_MNIST_HELP
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        problem = (
            f"is truncated: {len(data)} bytes"
            if len(data) < expected
            else f"has {len(data) - expected} unexpected trailing bytes: {len(data)} bytes"
        )
        raise DatasetCorruptError(
            f"{what} file {path} {problem}, but its header (dimensions "
            f"{' x '.join(map(str, dims))}) implies {expected} bytes. " + _FASHION_MNIST_HELP
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(directory: Path, split: str, kind: str) -> Path:
    names = _idx_candidates(split, kind)
    for name in names:
        path = directory / name
        if path.is_file():
            return path
    raise DatasetNotFoundError(
        f"Fashion-MNIST {split} {kind} not found in {directory}: looked for "
        f"{', '.join(names)}. " + _FASHION_MNIST_HELP
    )


def load_fashion_mnist(data_dir: str | Path | None = None, split: Split = "train") -> ImageDataset:
    """Load Fashion-MNIST from its IDX files.

    The files are looked up in ``data_dir`` under the names the Debian package
    ``dataset-fashion-mnist`` installs -- ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz`` -- or the same without ``.gz``; the test split also
    accepts a ``test-`` prefix, and ``-idx3-`` may be written ``.idx3-``. The first
    existing candidate is used, uncompressed before gzipped.

    Args:
        data_dir: folder with the files; ``None`` means :data:`DEFAULT_FASHION_MNIST_DIR`
            (``/usr/share/datasets/fashion-mnist``).
        split: ``"train"`` (60 000 images) or ``"test"`` (10 000 images).

    Returns:
        An :class:`ImageDataset` named ``"fashion-mnist-<split>"`` with images
        ``[N, 1, 28, 28]`` and the ten :data:`FASHION_MNIST_CLASSES`.

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"test"``.
        DatasetNotFoundError: the folder or a file is missing.
        DatasetCorruptError: a bad gzip stream, a wrong IDX magic number (2051 for images,
            2049 for labels), a byte count that disagrees with the header, images that are
            not 28 x 28, different image and label counts, or a label outside ``0..9``.

    Examples:
        >>> ds = load_fashion_mnist(split="test")  # doctest: +SKIP
        >>> ds.images.shape, ds.classes[9]  # doctest: +SKIP
        (torch.Size([10000, 1, 28, 28]), 'Ankle boot')
    """
    _check_split(split)
    directory = _as_dir(
        DEFAULT_FASHION_MNIST_DIR if data_dir is None else data_dir,
        "Fashion-MNIST",
        _FASHION_MNIST_HELP,
    )
    images_path = _find_idx(directory, split, "images")
    labels_path = _find_idx(directory, split, "labels")
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC, f"Fashion-MNIST {split} images")
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, f"Fashion-MNIST {split} labels")
    if images.shape[1:] != (28, 28):
        raise DatasetCorruptError(
            f"Fashion-MNIST images in {images_path} are {images.shape[1]} x {images.shape[2]}, "
            "expected 28 x 28. " + _FASHION_MNIST_HELP
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetCorruptError(
            f"Fashion-MNIST {split} count mismatch: {images.shape[0]} images in {images_path} "
            f"but {labels.shape[0]} labels in {labels_path}. " + _FASHION_MNIST_HELP
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        i = int(np.argmax(labels >= len(FASHION_MNIST_CLASSES)))
        raise DatasetCorruptError(
            f"Fashion-MNIST label out of range in {labels_path}: label {int(labels[i])} at "
            f"index {i}, expected 0..{len(FASHION_MNIST_CLASSES) - 1}. " + _FASHION_MNIST_HELP
        )
    return ImageDataset(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=FASHION_MNIST_CLASSES,
        name=f"fashion-mnist-{split}",
    )


# --------------------------------------------------------------------------- CIFAR-10


def _numpy_reconstruct() -> Any:
    try:  # numpy >= 2 (and the 1.26 forward-compatibility alias)
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# Exactly the globals a CIFAR-10 batch needs; the value None stands for numpy's
# ``_reconstruct``, resolved lazily because its module moved in numpy 2.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    # ndarray.__reduce__: numpy 1.x writes numpy.core..., numpy 2.x numpy._core...
    ("numpy.core.multiarray", "_reconstruct"): None,
    ("numpy._core.multiarray", "_reconstruct"): None,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # pickles of protocol <= 2 written by Python 3 encode ``bytes`` as this call
    ("_codecs", "encode"): codecs.encode,
}


class _RefusedGlobal(pickle.UnpicklingError):
    """Raised by :class:`_RestrictedUnpickler` for a global outside the allowed list."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild plain containers, bytes and numpy arrays.

    ``find_class`` is the only way a pickle can reach a callable; it maps exactly the
    globals in ``_ALLOWED_GLOBALS`` to fixed objects and refuses everything else
    *before* importing or calling anything. The allowed callables only build arrays,
    dtypes and bytes.
    """

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key not in _ALLOWED_GLOBALS:
            allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)
            raise _RefusedGlobal(
                f"refused global '{module}.{name}': a CIFAR-10 batch may only reference "
                f"{allowed}; it was neither imported nor called"
            )
        obj = _ALLOWED_GLOBALS[key]
        return _numpy_reconstruct() if obj is None else obj


def _restricted_load(path: Path, what: str) -> Any:
    """Unpickle ``path`` with :class:`_RestrictedUnpickler` (``encoding="bytes"``)."""
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _RefusedGlobal as e:
        raise UnsafePickleError(
            f"{what} file {path} is not a plain CIFAR-10 pickle and was refused as possibly "
            f"malicious: {e}. Use only the official files. " + _CIFAR10_HELP
        ) from e
    except Exception as e:  # any failure while decoding untrusted bytes means corrupt
        raise DatasetCorruptError(
            f"{what} file {path} could not be unpickled ({type(e).__name__}: {e}); it may be "
            "truncated or not a CIFAR-10 python batch. " + _CIFAR10_HELP
        ) from e


def _str_keys(obj: dict, path: Path, what: str) -> dict[str, Any]:
    out = {}
    for k, v in obj.items():
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if not isinstance(k, str):
            raise DatasetCorruptError(
                f"{what} file {path} has a non-string key {k!r}. " + _CIFAR10_HELP
            )
        out[k] = v
    return out


def _cifar_dir(data_dir: str | Path) -> Path:
    directory = _as_dir(data_dir, "CIFAR-10", _CIFAR10_HELP)
    inner = directory / "cifar-10-batches-py"
    if inner.is_dir():
        return inner
    markers = ("batches.meta", "data_batch_1", "test_batch")
    if any((directory / m).exists() for m in markers):
        return directory
    hint = ""
    if (directory / "cifar-10-python.tar.gz").exists():
        hint = " The archive cifar-10-python.tar.gz is there but has not been extracted."
    raise DatasetNotFoundError(
        f"CIFAR-10 not found: {directory} contains neither cifar-10-batches-py/ nor the "
        f"batch files ({', '.join(markers)}).{hint} " + _CIFAR10_HELP
    )


def _read_cifar_meta(directory: Path) -> tuple[str, ...]:
    path = directory / "batches.meta"
    if not path.exists():
        return CIFAR10_CLASSES
    meta = _restricted_load(path, "CIFAR-10 metadata")
    if not isinstance(meta, dict):
        raise DatasetCorruptError(
            f"CIFAR-10 metadata file {path} holds a {type(meta).__name__}, expected a dict. "
            + _CIFAR10_HELP
        )
    meta = _str_keys(meta, path, "CIFAR-10 metadata")
    if "label_names" not in meta:
        return CIFAR10_CLASSES
    names = meta["label_names"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DatasetCorruptError(
            f"CIFAR-10 metadata file {path}: label_names must be a list of strings, got "
            f"{names!r:.200}. " + _CIFAR10_HELP
        )
    classes = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)
    if not classes or len(set(classes)) != len(classes):
        raise DatasetCorruptError(
            f"CIFAR-10 metadata file {path}: label_names must be non-empty and unique, got "
            f"{list(classes)}. " + _CIFAR10_HELP
        )
    return classes


def _read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    what = "CIFAR-10 batch"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"CIFAR-10 batch {path.name} not found in {path.parent}. " + _CIFAR10_HELP
        )
    batch = _restricted_load(path, what)
    if not isinstance(batch, dict):
        raise DatasetCorruptError(
            f"{what} file {path} holds a {type(batch).__name__}, expected a dict with keys "
            "b'data' and b'labels'. " + _CIFAR10_HELP
        )
    batch = _str_keys(batch, path, what)
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        hint = " (fine_labels suggests CIFAR-100, not CIFAR-10)" if "fine_labels" in batch else ""
        raise DatasetCorruptError(
            f"{what} file {path} has bad keys: missing {', '.join(missing)}; found "
            f"{sorted(batch)}{hint}. " + _CIFAR10_HELP
        )
    data = batch["data"]
    if not isinstance(data, np.ndarray):
        raise DatasetCorruptError(
            f"{what} file {path}: data is a {type(data).__name__}, expected a numpy array. "
            + _CIFAR10_HELP
        )
    if data.dtype != np.uint8:
        raise DatasetCorruptError(
            f"{what} file {path}: data has dtype {data.dtype}, expected uint8. " + _CIFAR10_HELP
        )
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetCorruptError(
            f"{what} file {path}: data has wrong array shape {data.shape}, expected "
            "[k, 3072] (3 x 32 x 32 per row). " + _CIFAR10_HELP
        )
    raw_labels = batch["labels"]
    if isinstance(raw_labels, np.ndarray):
        ok = raw_labels.ndim == 1 and raw_labels.dtype.kind in "iu"
        labels = raw_labels.astype(np.int64) if ok else None
    else:
        ok = isinstance(raw_labels, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw_labels
        )
        labels = np.array(raw_labels, dtype=np.int64) if ok else None
    if labels is None:
        raise DatasetCorruptError(
            f"{what} file {path}: labels must be a list of ints, got "
            f"{type(raw_labels).__name__}. " + _CIFAR10_HELP
        )
    if labels.shape[0] != data.shape[0]:
        raise DatasetCorruptError(
            f"{what} file {path}: count mismatch, {data.shape[0]} images but "
            f"{labels.shape[0]} labels. " + _CIFAR10_HELP
        )
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DatasetCorruptError(
            f"{what} file {path}: label {int(labels[i])} at index {i} is out of range, "
            f"expected 0..{num_classes - 1} for {num_classes} classes. " + _CIFAR10_HELP
        )
    return data, labels


def load_cifar10(data_dir: str | Path | None, split: Split = "train") -> ImageDataset:
    """Load CIFAR-10 from the official "CIFAR-10 python version" batches.

    ``data_dir`` is the folder that contains ``cifar-10-batches-py/`` (what
    ``tar xzf cifar-10-python.tar.gz`` creates) or that folder itself. The train split is
    ``data_batch_1`` ... ``data_batch_5`` concatenated in order, the test split
    ``test_batch``. Each batch is a pickled dict whose ``b'data'`` is a ``uint8`` array
    ``[k, 3072]``: per image 1024 red, then 1024 green, then 1024 blue values, each plane
    row-major 32 x 32; ``b'labels'`` is a list of ``k`` ints.

    The pickles are read with a restricted unpickler that allows only the globals needed
    to rebuild a numpy array (``numpy.core.multiarray._reconstruct`` /
    ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
    ``_codecs.encode``); anything else is refused before it is imported or called.

    Args:
        data_dir: see above; ``None`` raises :class:`DatasetNotFoundError` with download
            instructions (there is no default location).
        split: ``"train"`` (50 000 images) or ``"test"`` (10 000 images).

    Returns:
        An :class:`ImageDataset` named ``"cifar10-<split>"`` with images
        ``[N, 3, 32, 32]``; class names from ``batches.meta`` (``b'label_names'``) when
        that file has them, else :data:`CIFAR10_CLASSES`.

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"test"``.
        DatasetNotFoundError: ``data_dir`` is ``None`` or missing, or a batch is missing.
        UnsafePickleError: a file references a global outside the allowed list.
        DatasetCorruptError: a file cannot be unpickled, is not a dict, lacks ``data`` or
            ``labels``, has data that is not a ``uint8`` array ``[k, 3072]``, or has
            labels of the wrong type, count or range.

    Examples:
        >>> ds = load_cifar10("~/data", split="test")  # doctest: +SKIP
        >>> ds.images.shape, ds.classes[0]  # doctest: +SKIP
        (torch.Size([10000, 3, 32, 32]), 'airplane')
    """
    _check_split(split)
    if data_dir is None:
        raise DatasetNotFoundError(
            "CIFAR-10 has no default location; pass the data directory. " + _CIFAR10_HELP
        )
    directory = _cifar_dir(data_dir)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"CIFAR-10 {split} split incomplete: missing batch {', '.join(missing)} in "
            f"{directory} (needs {', '.join(names)}). " + _CIFAR10_HELP
        )
    classes = _read_cifar_meta(directory)
    parts = [_read_cifar_batch(directory / n, len(classes)) for n in names]
    data = np.concatenate([d for d, _ in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([lab for _, lab in parts])
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(data)),
        labels=torch.from_numpy(labels),
        classes=classes,
        name=f"cifar10-{split}",
    )


# --------------------------------------------------------------------------- image folder


def load_image_folder(
    root: str | Path, split: str = "train", name: str | None = None
) -> ImageDataset:
    """Load ``root/<split>/<class>/*.png|jpg|jpeg`` with Pillow.

    Class folders are the sub-folders of ``root/<split>`` (hidden ones skipped), sorted
    alphabetically; label ``k`` is the ``k``-th. Files in each class folder are read in
    name order; other files are ignored. If every image has mode ``"L"`` the result is
    grayscale (``C = 1``), otherwise every image is converted to RGB (``C = 3``). All
    images must have the same size.

    Args:
        root: the tree's root folder.
        split: the sub-folder to read, e.g. ``"train"`` or ``"test"``.
        name: the data set's name; default ``"<root folder name>-<split>"``.

    Returns:
        An :class:`ImageDataset` with ``uint8`` images ``[N, C, H, W]``.

    Raises:
        DatasetNotFoundError: ``root`` or ``root/<split>`` is missing.
        DatasetCorruptError: no class folders, an empty class folder, an unreadable image,
            or an image whose size differs from the first one (the message names both).
        ImportError: Pillow is not installed.

    Examples:
        >>> ds = load_image_folder("~/data/cifar10-png", "test")  # doctest: +SKIP
        >>> ds.classes[:2]  # doctest: +SKIP
        ('airplane', 'automobile')
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:  # pragma: no cover - Pillow is a dependency
        raise ImportError("load_image_folder needs Pillow: pip install pillow") from e

    root_dir = _as_dir(root, "image folder", _FOLDER_HELP)
    split_dir = root_dir / split
    if not split_dir.is_dir():
        available = sorted(p.name for p in root_dir.iterdir() if p.is_dir())
        raise DatasetNotFoundError(
            f"image folder: split folder {split_dir} not found (splits present: "
            f"{available or 'none'}). " + _FOLDER_HELP
        )
    class_dirs = sorted(
        (p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if not class_dirs:
        raise DatasetCorruptError(
            f"image folder: {split_dir} has no class sub-folders. " + _FOLDER_HELP
        )
    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        found = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not found:
            raise DatasetCorruptError(
                f"image folder: class folder {class_dir} is empty (no "
                f"{'/'.join(_IMAGE_SUFFIXES)} images). " + _FOLDER_HELP
            )
        files += [(p, label) for p in found]

    def corrupt(path: Path, e: Exception) -> DatasetCorruptError:
        return DatasetCorruptError(f"image folder: cannot read image {path} ({e})")

    # First pass reads only headers: modes and sizes.
    modes: set[str] = set()
    first: tuple[Path, tuple[int, int]] | None = None
    for path, _ in files:
        try:
            with Image.open(path) as im:
                mode, size = im.mode, im.size
        except (UnidentifiedImageError, OSError) as e:
            raise corrupt(path, e) from e
        modes.add(mode)
        if first is None:
            first = (path, size)
        elif size != first[1]:
            raise DatasetCorruptError(
                f"image folder: mixed image sizes, {path} is {size[0]}x{size[1]} (WxH) but "
                f"{first[0]} is {first[1][0]}x{first[1][1]}; all images must have the same "
                "size (resize them beforehand)"
            )
    target = "L" if modes == {"L"} else "RGB"
    arrays = []
    for path, _ in files:
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert(target), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise corrupt(path, e) from e
        arrays.append(arr[:, :, None] if arr.ndim == 2 else arr)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageDataset(
        images=images,
        labels=torch.tensor([label for _, label in files], dtype=torch.int64),
        classes=tuple(p.name for p in class_dirs),
        name=name if name is not None else f"{root_dir.name}-{split}",
    )


# --------------------------------------------------------------------------- dispatch


def load_dataset(
    name: str, data_dir: str | Path | None = None, split: Split = "train"
) -> ImageDataset:
    """Load a data set by name.

    Args:
        name: one of :data:`DATASET_NAMES`: ``"fashion-mnist"`` (:func:`load_fashion_mnist`,
            ``data_dir`` defaults to :data:`DEFAULT_FASHION_MNIST_DIR`), ``"cifar10"``
            (:func:`load_cifar10`) or ``"cifar10-folder"`` (:func:`load_image_folder`);
            the last two need ``data_dir``.
        data_dir: where the files are; see each loader.
        split: ``"train"`` or ``"test"``.

    Returns:
        The loaded :class:`ImageDataset`.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones) or bad ``split``.
        DatasetNotFoundError: files are missing, or ``data_dir`` is ``None`` for a data set
            without a default location.
        DatasetCorruptError: files are malformed.

    Examples:
        >>> ds = load_dataset("fashion-mnist", split="test")  # doctest: +SKIP
        >>> len(ds)  # doctest: +SKIP
        10000
    """
    _check_split(split)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir, split)
    if name == "cifar10":
        return load_cifar10(data_dir, split)
    if name == "cifar10-folder":
        if data_dir is None:
            raise DatasetNotFoundError(
                "cifar10-folder has no default location; pass the tree's root as --data-dir. "
                + _FOLDER_HELP
            )
        return load_image_folder(data_dir, split, name=f"cifar10-folder-{split}")
    raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}")

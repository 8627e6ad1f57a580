"""Data-set loaders: tiny files in each on-disk format, read back exactly; every missing or
corrupt case raises a clear error; tampered CIFAR pickles are refused without running."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from weightmanifold.experiments import datasets as ds
from weightmanifold.experiments.datasets import (
    CIFAR10_CLASSES,
    DATASET_NAMES,
    FASHION_MNIST_CLASSES,
    DatasetCorruptError,
    DatasetError,
    DatasetNotFoundError,
    ImageDataset,
    UnsafePickleError,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
)

# --------------------------------------------------------------------------- IDX helpers


def write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> Path:
    """Write an IDX file (gzipped when ``path`` ends in ``.gz``)."""
    raw = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def make_fmnist(
    directory: Path,
    split: str = "train",
    n: int = 5,
    gz: bool = True,
    prefix: str | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``n`` random 28x28 images and labels; return them."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = prefix or ("train" if split == "train" else "t10k")
    ext = ".gz" if gz else ""
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", 2051, (n, 28, 28), images.tobytes())
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", 2049, (n,), labels.tobytes())
    return images, labels


# --------------------------------------------------------------------------- ImageDataset


def toy(n: int = 6, classes: tuple[str, ...] = ("a", "b", "c")) -> ImageDataset:
    images = torch.arange(n * 2 * 2, dtype=torch.int64).reshape(n, 1, 2, 2).to(torch.uint8)
    return ImageDataset(images, torch.arange(n) % len(classes), classes, "toy")


def test_image_dataset_basics():
    d = toy()
    assert len(d) == 6
    assert d.image_shape == (1, 2, 2)
    assert d.num_classes == 3
    f = d.float()
    assert f.dtype == torch.float32
    assert torch.equal(f, d.images.to(torch.float32) / 255)
    assert float(f.min()) >= 0 and float(f.max()) <= 1
    assert "toy" in repr(d) and "n=6" in repr(d)
    assert d == d and d != toy()  # identity equality, no tensor comparison
    with pytest.raises(AttributeError):
        d.name = "other"  # frozen


def test_image_dataset_classes_list_becomes_tuple():
    d = ImageDataset(torch.zeros(1, 1, 1, 1, dtype=torch.uint8), torch.tensor([1]), ["x", "y"], "t")
    assert d.classes == ("x", "y")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"images": torch.zeros(2, 1, 2, 2)}, TypeError, "uint8"),
        ({"images": np.zeros((2, 1, 2, 2), np.uint8)}, TypeError, "torch.Tensor"),
        ({"images": torch.zeros(2, 2, 2, dtype=torch.uint8)}, ValueError, r"\[N, C, H, W\]"),
        ({"images": torch.zeros(2, 0, 2, 2, dtype=torch.uint8)}, ValueError, "C, H, W >= 1"),
        ({"labels": torch.tensor([0, 1], dtype=torch.int32)}, TypeError, "int64"),
        ({"labels": torch.tensor([[0, 1]])}, ValueError, r"shape \[N\]"),
        ({"labels": torch.tensor([0, 1, 0])}, ValueError, "2 images but 3 labels"),
        ({"labels": torch.tensor([0, 2])}, ValueError, "label 2 at index 1 is out of range"),
        ({"labels": torch.tensor([-1, 0])}, ValueError, "label -1 at index 0"),
        ({"classes": ()}, ValueError, "must not be empty"),
        ({"classes": ("a", "a")}, ValueError, "unique"),
        ({"classes": "ab"}, TypeError, "sequence of strings"),
        ({"classes": ("a", 1)}, TypeError, "strings"),
        ({"name": ""}, ValueError, "name must not be empty"),
        ({"name": 3}, TypeError, "name must be a string"),
    ],
)
def test_image_dataset_validation(kwargs, exc, match):
    args = {
        "images": torch.zeros(2, 1, 2, 2, dtype=torch.uint8),
        "labels": torch.tensor([0, 1]),
        "classes": ("a", "b"),
        "name": "t",
    }
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ImageDataset(**args)


def test_subset_seeded_and_ordered():
    d = toy(20)
    a = d.subset(7, generator=3)
    b = d.subset(7, generator=torch.Generator().manual_seed(3))
    assert len(a) == 7 and a.classes == d.classes and a.name == d.name
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # each chosen image keeps its label, order preserved, no repeats
    idx = a.images[:, 0, 0, 0].to(torch.int64) // 4
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 7
    assert torch.equal(a.labels, d.labels[idx])
    assert not torch.equal(a.images, d.subset(7, generator=4).images)
    assert torch.equal(d.subset(20, generator=0).images, d.images)
    with pytest.raises(ValueError, match=r"n must be in \[1, 20\]"):
        d.subset(21)
    with pytest.raises(ValueError, match="n must be in"):
        d.subset(0)
    with pytest.raises(TypeError, match="n must be an int"):
        d.subset(2.0)
    with pytest.raises(TypeError, match="generator"):
        d.subset(2, generator="seed")


def test_error_hierarchy():
    assert issubclass(DatasetNotFoundError, FileNotFoundError)
    assert issubclass(DatasetNotFoundError, DatasetError)
    assert issubclass(DatasetCorruptError, ValueError)
    assert issubclass(DatasetCorruptError, DatasetError)
    assert issubclass(UnsafePickleError, DatasetCorruptError)


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
def test_fashion_mnist_roundtrip(tmp_path, gz, split):
    images, labels = make_fmnist(tmp_path, split, n=5, gz=gz)
    d = load_fashion_mnist(tmp_path, split)
    assert d.name == f"fashion-mnist-{split}"
    assert d.images.shape == (5, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.labels.dtype == torch.int64
    assert torch.equal(d.images[:, 0], torch.from_numpy(images))
    assert torch.equal(d.labels, torch.from_numpy(labels.astype(np.int64)))
    assert d.classes == FASHION_MNIST_CLASSES
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"


def test_fashion_mnist_splits_are_separate(tmp_path):
    train, _ = make_fmnist(tmp_path, "train", n=4, seed=1)
    test, _ = make_fmnist(tmp_path, "test", n=3, seed=2)
    assert torch.equal(load_fashion_mnist(str(tmp_path), "train").images[:, 0], torch.tensor(train))
    assert torch.equal(load_fashion_mnist(str(tmp_path), "test").images[:, 0], torch.tensor(test))


def test_fashion_mnist_alternative_names(tmp_path):
    images, _ = make_fmnist(tmp_path / "a", "test", n=2, prefix="test", gz=False)
    assert torch.equal(
        load_fashion_mnist(tmp_path / "a", "test").images[:, 0], torch.tensor(images)
    )
    # original MNIST archives unpack to train-images.idx3-ubyte
    b = tmp_path / "b"
    b.mkdir()
    write_idx(b / "train-images.idx3-ubyte", 2051, (1, 28, 28), bytes(784))
    write_idx(b / "train-labels.idx1-ubyte", 2049, (1,), b"\x07")
    assert load_fashion_mnist(b).labels.tolist() == [7]


def test_fashion_mnist_default_dir(tmp_path, monkeypatch):
    make_fmnist(tmp_path, "test", n=2)
    monkeypatch.setattr(ds, "DEFAULT_FASHION_MNIST_DIR", tmp_path)
    assert len(load_fashion_mnist(split="test")) == 2
    assert len(load_dataset("fashion-mnist", split="test")) == 2


def test_fashion_mnist_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_fashion_mnist(tmp_path, "test")
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and str(tmp_path) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "Nothing is downloaded" in msg
    assert isinstance(e.value, FileNotFoundError)
    make_fmnist(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="test labels not found"):
        load_fashion_mnist(tmp_path, "test")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_fashion_mnist(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_fashion_mnist(tmp_path, "val")


def test_fashion_mnist_wrong_magic(tmp_path):
    make_fmnist(tmp_path, n=2)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", 2049, (2, 28, 28), bytes(2 * 784))
    with pytest.raises(DatasetCorruptError, match=r"wrong magic number 2049 .*expected 2051"):
        load_fashion_mnist(tmp_path)
    make_fmnist(tmp_path, n=2)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", 2051, (2,), bytes(2))
    with pytest.raises(DatasetCorruptError, match=r"labels file .* wrong magic .*expected 2049"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_truncated_and_trailing(tmp_path):
    make_fmnist(tmp_path, n=3, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(DatasetCorruptError, match=r"is truncated: .*implies 2368 bytes"):
        load_fashion_mnist(tmp_path)
    path.write_bytes(raw + b"xx")
    with pytest.raises(DatasetCorruptError, match="2 unexpected trailing bytes"):
        load_fashion_mnist(tmp_path)
    path.write_bytes(raw[:10])
    with pytest.raises(DatasetCorruptError, match="shorter than its 16-byte IDX header"):
        load_fashion_mnist(tmp_path)
    path.write_bytes(b"\x00")
    with pytest.raises(DatasetCorruptError, match="too short for an IDX header"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_bad_gzip(tmp_path):
    make_fmnist(tmp_path, n=3)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])  # truncated gzip stream
    with pytest.raises(DatasetCorruptError, match="not a valid gzip file"):
        load_fashion_mnist(tmp_path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetCorruptError, match="not a valid gzip file"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_count_mismatch(tmp_path):
    make_fmnist(tmp_path, n=3)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", 2049, (2,), bytes(2))
    with pytest.raises(DatasetCorruptError, match=r"count mismatch: 3 images .* but 2 labels"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_wrong_size_and_label_range(tmp_path):
    make_fmnist(tmp_path, n=2)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", 2051, (2, 32, 32), bytes(2 * 1024))
    with pytest.raises(DatasetCorruptError, match=r"are 32 x 32, expected 28 x 28"):
        load_fashion_mnist(tmp_path)
    make_fmnist(tmp_path, n=2)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", 2049, (2,), bytes([3, 10]))
    with pytest.raises(DatasetCorruptError, match=r"label out of range.*label 10 at index 1"):
        load_fashion_mnist(tmp_path)


# --------------------------------------------------------------------------- CIFAR-10


def cifar_batch(k: int, seed: int, num_classes: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in rng.integers(0, num_classes, size=k)],
        b"data": rng.integers(0, 256, size=(k, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(k)],
    }


def dump(obj, path: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


def make_cifar(root: Path, k: int = 3, meta: bool = True) -> tuple[Path, dict[str, dict]]:
    """Write a tiny ``root/cifar-10-batches-py``; return that folder and the batches."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {n: cifar_batch(k, seed) for seed, n in enumerate(names)}
    for n, b in batches.items():
        dump(b, folder / n)
    if meta:
        dump(
            {
                b"num_cases_per_batch": k,
                b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                b"num_vis": 3072,
            },
            folder / "batches.meta",
        )
    return folder, batches


def test_cifar10_roundtrip_and_channel_layout(tmp_path):
    folder, batches = make_cifar(tmp_path)
    train = load_cifar10(tmp_path, "train")
    assert train.name == "cifar10-train"
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes == CIFAR10_CLASSES
    data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = [v for i in range(1, 6) for v in batches[f"data_batch_{i}"][b"labels"]]
    assert train.labels.tolist() == labels
    # each row is 1024 R values, then 1024 G, then 1024 B, each plane row-major 32 x 32
    for n in (0, 7, 14):
        for c, y, x in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 5, 9), (2, 31, 31), (2, 17, 3)]:
            assert int(train.images[n, c, y, x]) == int(data[n, c * 1024 + y * 32 + x])
    assert torch.equal(train.images.reshape(15, 3072), torch.from_numpy(data))
    test = load_cifar10(folder, "test")  # the batches folder itself works too
    assert len(test) == 3 and test.name == "cifar10-test"
    assert torch.equal(
        test.images.reshape(3, 3072), torch.from_numpy(batches["test_batch"][b"data"])
    )


def test_cifar10_explicit_channel_planes(tmp_path):
    folder, _ = make_cifar(tmp_path, k=1)
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    row[1] = 99  # red, y=0, x=1
    row[1024 + 32] = 98  # green, y=1, x=0
    row[2048 + 1023] = 97  # blue, y=31, x=31
    dump({b"data": row[None], b"labels": [4]}, folder / "test_batch")
    img = load_cifar10(tmp_path, "test").images[0]
    assert int(img[0, 0, 1]) == 99 and int(img[1, 1, 0]) == 98 and int(img[2, 31, 31]) == 97
    assert int(img[0, 5, 5]) == 10 and int(img[1, 5, 5]) == 20 and int(img[2, 5, 5]) == 30


def test_cifar10_class_names_from_meta(tmp_path):
    folder, _ = make_cifar(tmp_path, meta=False)
    assert load_cifar10(tmp_path, "test").classes == CIFAR10_CLASSES
    names = [f"c{i}".encode() for i in range(10)]
    dump({b"label_names": names}, folder / "batches.meta")
    assert load_cifar10(tmp_path, "test").classes == tuple(f"c{i}" for i in range(10))
    dump({b"num_vis": 3072}, folder / "batches.meta")  # no label_names: standard ones
    assert load_cifar10(tmp_path, "test").classes == CIFAR10_CLASSES
    dump({b"label_names": "airplane"}, folder / "batches.meta")
    with pytest.raises(DatasetCorruptError, match="label_names must be a list of strings"):
        load_cifar10(tmp_path, "test")
    dump([1, 2], folder / "batches.meta")
    with pytest.raises(DatasetCorruptError, match=r"metadata file .* holds a list"):
        load_cifar10(tmp_path, "test")


def test_cifar10_python2_style_pickles(tmp_path):
    """The official files come from Python 2 / numpy 1: str opcodes, numpy.core names."""
    folder, batches = make_cifar(tmp_path, meta=False)
    raw = (folder / "test_batch").read_bytes()
    new, old = b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
    if new in raw:
        (folder / "test_batch").write_bytes(raw.replace(new, old))
    assert old in (folder / "test_batch").read_bytes()
    # {'label_names': ['x0', ..., 'x9']} as Python 2 cPickle protocol 2 writes it
    items = b"".join(b"U\x02x" + str(i).encode() for i in range(10))
    meta = b"\x80\x02}U\x0blabel_names](" + items + b"es."
    (folder / "batches.meta").write_bytes(meta)
    d = load_cifar10(tmp_path, "test")
    assert d.classes == tuple(f"x{i}" for i in range(10))
    assert torch.equal(d.images.reshape(3, 3072), torch.from_numpy(batches["test_batch"][b"data"]))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize(
    ("payload", "refused"),
    [(_SystemPayload, f"{os.system.__module__}.system"), (_EvalPayload, "__builtin__.eval")],
)
@pytest.mark.parametrize("where", ["whole", "inside"])
def test_cifar10_malicious_pickle_refused(tmp_path, payload, refused, where):
    folder, _ = make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    obj = payload(marker)
    if where == "inside":  # hidden inside an otherwise valid batch
        obj = {**cifar_batch(3, 0), b"filenames": [obj]}
    dump(obj, folder / "data_batch_1")
    with pytest.raises(UnsafePickleError) as e:
        load_cifar10(tmp_path, "train")
    assert not marker.exists()
    msg = str(e.value)
    assert f"refused global '{refused}'" in msg and "data_batch_1" in msg
    assert "neither imported nor called" in msg
    assert isinstance(e.value, ValueError)


def test_cifar10_malicious_payload_is_live(tmp_path):
    """Control: the same payload does run under plain ``pickle.load``."""
    marker = tmp_path / "pwned"
    path = dump(_EvalPayload(marker), tmp_path / "evil")
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_cifar10_malicious_meta_refused(tmp_path):
    folder, _ = make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    dump(_EvalPayload(marker), folder / "batches.meta")
    with pytest.raises(UnsafePickleError, match=r"refused global '__builtin__\.eval'"):
        load_cifar10(tmp_path, "test")
    assert not marker.exists()


def test_cifar10_other_globals_refused(tmp_path):
    folder, _ = make_cifar(tmp_path)
    batch = cifar_batch(3, 0)
    batch[b"labels"] = [np.int64(v) for v in batch[b"labels"]]  # numpy scalars: not allowed
    dump(batch, folder / "test_batch")
    with pytest.raises(UnsafePickleError, match=r"refused global 'numpy.*scalar'"):
        load_cifar10(tmp_path, "test")


def test_cifar10_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no default location") as e:
        load_cifar10(None)
    assert "cs.toronto.edu" in str(e.value) and "--data-dir" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="neither cifar-10-batches-py/"):
        load_cifar10(tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="has not been extracted"):
        load_cifar10(tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").unlink()
    folder, _ = make_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing batch data_batch_3") as e:
        load_cifar10(tmp_path, "train")
    assert str(folder) in str(e.value)
    assert len(load_cifar10(tmp_path, "test")) == 3  # test split still complete
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing batch test_batch"):
        load_cifar10(tmp_path, "test")


def _mutate(batch: dict, **changes) -> dict:
    out = dict(batch)
    for key, value in changes.items():
        if value is None:
            del out[key.encode()]
        else:
            out[key.encode()] = value
    return out


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda b: [b], "holds a list, expected a dict"),
        (lambda b: _mutate(b, data=None), r"bad keys: missing data; found \['batch_label'"),
        (lambda b: _mutate(b, labels=None), "bad keys: missing labels"),
        (
            lambda b: _mutate(b, labels=None, fine_labels=[0, 0, 0]),
            "fine_labels suggests CIFAR-100",
        ),
        (lambda b: _mutate(b, data=b[b"data"].reshape(3, 3, 32, 32)), "wrong array shape"),
        (
            lambda b: _mutate(b, data=np.zeros((3, 3000), np.uint8)),
            r"wrong array shape \(3, 3000\)",
        ),
        (lambda b: _mutate(b, data=b[b"data"].astype(np.float32)), "dtype float32, expected uint8"),
        (lambda b: _mutate(b, data=b[b"data"].tolist()), "data is a list, expected a numpy array"),
        (lambda b: _mutate(b, labels=[0, 1]), "count mismatch, 3 images but 2 labels"),
        (lambda b: _mutate(b, labels=[0, 10, 1]), "label 10 at index 1 is out of range"),
        (lambda b: _mutate(b, labels=[0, -1, 1]), "label -1 at index 1 is out of range"),
        (lambda b: _mutate(b, labels=["a", "b", "c"]), "labels must be a list of ints"),
        (lambda b: _mutate(b, labels=np.array([0, 1, 2])), None),  # ndarray labels accepted
    ],
)
def test_cifar10_corrupt_batch(tmp_path, make, match):
    folder, _ = make_cifar(tmp_path)
    dump(make(cifar_batch(3, 9)), folder / "test_batch")
    if match is None:
        assert load_cifar10(tmp_path, "test").labels.tolist() == [0, 1, 2]
        return
    with pytest.raises(DatasetCorruptError, match=match) as e:
        load_cifar10(tmp_path, "test")
    assert "test_batch" in str(e.value)


def test_cifar10_label_range_follows_meta(tmp_path):
    folder, _ = make_cifar(tmp_path)
    dump({b"label_names": [b"a", b"b"]}, folder / "batches.meta")
    dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 2]}, folder / "test_batch")
    with pytest.raises(DatasetCorruptError, match=r"label 2 at index 1 .* expected 0..1"):
        load_cifar10(tmp_path, "test")


def test_cifar10_truncated_pickle(tmp_path):
    folder, _ = make_cifar(tmp_path)
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetCorruptError, match="data_batch_2 could not be unpickled"):
        load_cifar10(tmp_path, "train")
    (folder / "data_batch_2").write_bytes(b"")
    with pytest.raises(DatasetCorruptError, match="could not be unpickled"):
        load_cifar10(tmp_path, "train")


# --------------------------------------------------------------------------- image folder


def write_image(path: Path, array: np.ndarray, **save) -> Path:
    """Save ``array`` (L for [H, W], RGB for [H, W, 3], RGBA for [H, W, 4]) with Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def test_image_folder_rgb_png_and_jpg(tmp_path):
    rng = np.random.default_rng(0)
    pix = {}
    for cls, files in {"cat": ["b.png", "a.png"], "airplane": ["x.PNG"], "dog": ["z.jpg"]}.items():
        for f in files:
            arr = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
            pix[(cls, f)] = arr
            write_image(tmp_path / "train" / cls / f, arr, quality=95)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "train" / ".hidden").mkdir()
    d = load_image_folder(tmp_path, "train")
    assert d.classes == ("airplane", "cat", "dog")
    assert d.labels.tolist() == [0, 1, 1, 2]
    assert d.images.shape == (4, 3, 4, 5) and d.images.dtype == torch.uint8
    assert d.name == f"{tmp_path.name}-train"
    order = [("airplane", "x.PNG"), ("cat", "a.png"), ("cat", "b.png")]
    for i, key in enumerate(order):  # PNG is lossless: exact pixels, channels first
        assert torch.equal(d.images[i], torch.from_numpy(pix[key]).permute(2, 0, 1))
    with Image.open(tmp_path / "train" / "dog" / "z.jpg") as im:  # JPEG: as Pillow decodes it
        jpg = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(d.images[3], jpg)


def test_image_folder_grayscale_and_mixed_modes(tmp_path):
    g0 = np.arange(12, dtype=np.uint8).reshape(3, 4)
    g1 = (255 - np.arange(12, dtype=np.uint8)).reshape(3, 4)
    write_image(tmp_path / "test" / "a" / "0.png", g0)
    write_image(tmp_path / "test" / "b" / "1.jpeg", g1, quality=100)
    d = load_image_folder(tmp_path, "test")
    assert d.images.shape == (2, 1, 3, 4)
    assert torch.equal(d.images[0, 0], torch.from_numpy(g0))
    # one RGBA image among grayscale ones: everything becomes RGB
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    write_image(tmp_path / "test" / "c" / "2.png", rgba)
    d = load_image_folder(tmp_path, "test")
    assert d.images.shape == (3, 3, 3, 4)
    assert torch.equal(d.images[0], torch.from_numpy(g0)[None].expand(3, 3, 4))
    assert d.images[2, 0].eq(200).all() and d.images[2, 1:].eq(0).all()


def test_image_folder_errors(tmp_path):
    write_image(tmp_path / "train" / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "train" / "b" / "1.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(DatasetCorruptError, match="mixed image sizes") as e:
        load_image_folder(tmp_path, "train")
    assert "b/1.png is 5x4" in str(e.value) and "a/0.png is 4x4" in str(e.value)
    (tmp_path / "train" / "b" / "1.png").unlink()
    with pytest.raises(DatasetCorruptError, match=r"class folder .*train/b is empty"):
        load_image_folder(tmp_path, "train")
    (tmp_path / "train" / "b" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DatasetCorruptError, match=r"cannot read image .*1\.png"):
        load_image_folder(tmp_path, "train")
    with pytest.raises(DatasetNotFoundError, match=r"split folder .*test not found .*\['train'\]"):
        load_image_folder(tmp_path, "test")
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetCorruptError, match="has no class sub-folders"):
        load_image_folder(tmp_path, "val")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere", "train")


# --------------------------------------------------------------------------- dispatch


def test_load_dataset_dispatch(tmp_path):
    make_fmnist(tmp_path / "fm", "train", n=2)
    assert load_dataset("fashion-mnist", tmp_path / "fm").name == "fashion-mnist-train"
    make_cifar(tmp_path / "c")
    assert load_dataset("cifar10", tmp_path / "c", "test").name == "cifar10-test"
    write_image(tmp_path / "f" / "test" / "cat" / "0.png", np.zeros((32, 32, 3), np.uint8))
    d = load_dataset("cifar10-folder", tmp_path / "f", "test")
    assert d.name == "cifar10-folder-test" and d.classes == ("cat",)
    assert DATASET_NAMES == ("fashion-mnist", "cifar10", "cifar10-folder")


def test_load_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'mnist'; valid names: fashion-mnist, "):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("cifar10", tmp_path, "validation")
    with pytest.raises(DatasetNotFoundError, match="no default location"):
        load_dataset("cifar10")
    with pytest.raises(DatasetNotFoundError, match="cifar10-folder has no default location"):
        load_dataset("cifar10-folder")


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_fashion_mnist():
    if not (ds.DEFAULT_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("install the Debian package dataset-fashion-mnist")
    train = load_fashion_mnist(split="train")
    test = load_fashion_mnist(split="test")
    assert train.images.shape == (60000, 1, 28, 28)
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    assert 0 < float(test.float().mean()) < 1

"""IDX data sets (MNIST, Fashion-MNIST) and the task sequences built on them.

Search order for a data set ``<name>`` (each place may hold the four IDX files directly or in a
``<name>/`` sub-folder, gzipped or not):

1. ``--data-dir``
2. ``$HWLOOP_DATA``
3. ``/usr/share/datasets/<name>`` (Debian's dataset packages, e.g. ``dataset-fashion-mnist``)
4. the user cache, ``$XDG_CACHE_HOME/hwloop/<name>`` (default ``~/.cache/hwloop/<name>``)

With ``download=True`` (``hwloop train --download``) a missing set is fetched from the official mirrors
into the user cache. Every file's decompressed content is checked against the published MD5; a file that
does not match is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwloop.errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: MD5 of the decompressed IDX files, as published with the data sets.
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

#: Per-data-set input normalisation (mean, std of the training pixels scaled to [0, 1]).
NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}


@dataclass
class DataSet:
    name: str
    x_train: np.ndarray  # (n, 784) uint8
    y_train: np.ndarray  # (n,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def search_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The places searched for data set ``name``, in order."""
    places: list[Path] = []
    for root in (data_dir, os.environ.get("HWLOOP_DATA")):
        if root:
            places += [Path(root) / name, Path(root)]
    places.append(Path("/usr/share/datasets") / name)
    places.append(cache_dir() / name)
    return places


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hwloop"


def _find_file(d: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for cand in (d / stem, d / f"{stem}.gz", d / dotted, d / f"{dotted}.gz"):
        if cand.is_file():
            return cand
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is unreadable or a truncated archive ({exc}); delete it and fetch it again") from exc


def parse_idx(raw: bytes, where: str = "") -> np.ndarray:
    """Parse an IDX file (unsigned-byte data) into an array."""
    if len(raw) < 4:
        raise DataError(f"{where}: too short to be an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{where}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{where}: IDX header says {dims} but the file holds {body.size} values (truncated?)")
    return body.reshape(dims)


def _load_dir(name: str, d: Path, verify: bool) -> DataSet | None:
    paths = {k: _find_file(d, stem) for k, stem in FILES.items()}
    if any(p is None for p in paths.values()):
        return None
    arrays = {}
    for key, p in paths.items():
        assert p is not None
        raw = _read_bytes(p)
        stem = FILES[key]
        expected = MD5.get(name, {}).get(stem)
        if verify and expected is not None and hashlib.md5(raw).hexdigest() != expected:
            raise DataError(
                f"{p}: checksum mismatch for {name} {stem} (MD5 {hashlib.md5(raw).hexdigest()}, expected "
                f"{expected}); the file is corrupt or a different data set: replace it"
            )
        arrays[key] = parse_idx(raw, str(p))
    x_tr, x_te = arrays["train_images"], arrays["test_images"]
    if x_tr.ndim != 3 or x_te.ndim != 3 or x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{d}: image files of {name} have inconsistent shapes {x_tr.shape} / {x_te.shape}")
    if len(arrays["train_labels"]) != len(x_tr) or len(arrays["test_labels"]) != len(x_te):
        raise DataError(f"{d}: {name} has different numbers of images and labels")
    return DataSet(
        name=name,
        x_train=x_tr.reshape(len(x_tr), -1),
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=x_te.reshape(len(x_te), -1),
        y_test=arrays["test_labels"].astype(np.int64),
        source=str(d),
    )


def load_dataset(
    name: str, data_dir: str | Path | None = None, *, download: bool = False, verify: bool = True
) -> DataSet:
    """Find and load data set ``name`` (``mnist`` or ``fashion-mnist``), or raise one clear ``DataError``."""
    if name not in FILES and name not in MD5:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(MD5)}")
    places = search_dirs(name, data_dir)
    for d in places:
        if d.is_dir():
            ds = _load_dir(name, d, verify)
            if ds is not None:
                return ds
    if download:
        target = cache_dir() / name
        _download(name, target)
        ds = _load_dir(name, target, verify)
        if ds is not None:
            return ds
    looked = ", ".join(str(p) for p in places)
    raise DataError(
        f"data set {name!r} not found; looked in: {looked}. Put the four IDX files ({', '.join(FILES.values())}, "
        f".gz or not) in one of these, pass --data-dir DIR, set HWLOOP_DATA, or add --download to fetch them"
    )


def _download(name: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    errors = []
    for stem in FILES.values():
        dest = target / f"{stem}.gz"
        if dest.exists():
            continue
        for base in MIRRORS[name]:
            try:
                with urllib.request.urlopen(base + stem + ".gz", timeout=30) as resp:
                    data = resp.read()
                raw = gzip.decompress(data)
                if hashlib.md5(raw).hexdigest() != MD5[name][stem]:
                    errors.append(f"{base}{stem}.gz: checksum mismatch")
                    continue
                tmp = dest.with_suffix(".part")
                tmp.write_bytes(data)
                tmp.replace(dest)
                break
            except (OSError, ValueError) as exc:
                errors.append(f"{base}{stem}.gz: {exc}")
        else:
            raise DataError(f"could not download {name} ({'; '.join(errors[-2:])}); are you online?")


# ---------------------------------------------------------------------------- tasks
@dataclass
class Task:
    """One task of a continual-learning sequence: normalised float32 inputs in (n, 784) and labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def parse_tasks(spec: str) -> list[str]:
    """``"mnist,fashion-mnist"`` or ``"permuted-mnist:3"`` (expands to 3 tasks) into task names."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part.startswith("permuted-mnist"):
            _, _, k = part.partition(":")
            try:
                n = int(k) if k else 2
            except ValueError as exc:
                raise DataError(
                    f"bad task {part!r}: use permuted-mnist:<number of tasks>, e.g. permuted-mnist:3"
                ) from exc
            if n < 1:
                raise DataError(f"bad task {part!r}: permuted-mnist needs at least 1 task")
            names += [f"permuted-mnist-{i + 1}" for i in range(n)]
        elif part in MD5:
            names.append(part)
        else:
            raise DataError(
                f"unknown task {part!r}; choose from mnist, fashion-mnist, permuted-mnist:<k> (comma-separated)"
            )
    if not names:
        raise DataError("no task given: use e.g. --tasks mnist,fashion-mnist")
    return names


def load_task(
    name: str,
    data_dir: str | Path | None = None,
    *,
    train_samples: int | None = None,
    download: bool = False,
    cache: dict | None = None,
    verify: bool = True,
) -> Task:
    """Load one task by name. ``permuted-mnist-k`` is MNIST with a fixed pixel permutation (k=1: none)."""
    base = "mnist" if name.startswith("permuted-mnist") else name
    if cache is not None and base in cache:
        ds = cache[base]
    else:
        ds = load_dataset(base, data_dir, download=download, verify=verify)
        if cache is not None:
            cache[base] = ds
    mean, std = NORMALISATION.get(base, (0.5, 0.25))
    if train_samples is not None and train_samples > len(ds.x_train):
        raise DataError(
            f"--train-samples {train_samples} is more than the {len(ds.x_train)} training images of "
            f"{name}; give at most {len(ds.x_train)} (or leave it out for all of them)"
        )
    x_tr = ds.x_train if train_samples is None else ds.x_train[:train_samples]
    y_tr = ds.y_train if train_samples is None else ds.y_train[:train_samples]

    def norm(x: np.ndarray) -> np.ndarray:
        # in place on one float32 copy: the same operations as ((x / 255) - mean) / std, bit for bit, without
        # three full-size temporaries (which cost 1-3 s per task here, in page faults)
        y = x.astype(np.float32)
        y /= np.float32(255.0)
        y -= np.float32(mean)
        y /= np.float32(std)
        return y

    x_train, x_test = norm(x_tr), norm(ds.x_test)
    if name.startswith("permuted-mnist-"):
        k = int(name.rsplit("-", 1)[1])
        if k > 1:
            perm = np.random.default_rng(1000 + k).permutation(x_train.shape[1])
            x_train, x_test = x_train[:, perm], x_test[:, perm]
    return Task(name, x_train, y_tr.copy(), x_test, ds.y_test.copy(), ds.source)


def write_idx(path: str | Path, array: np.ndarray, gz: bool = True) -> None:
    """Write an unsigned-byte IDX file (for tests and small synthetic data sets)."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.tobytes()
    p = Path(path)
    if gz:
        with gzip.open(p, "wb") as fh:
            fh.write(raw)
    else:
        p.write_bytes(raw)

"""MNIST as four tensors on the training device, read once, normalized once; batched augmentation.

Files are read by our own IDX reader so that a broken file gets a one-line error naming it; torchvision is
used only to download when the files are absent.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinymnist.errors import UserError

MEAN, STD = 0.1307, 0.3081
FILES = {
    "train_images": ("train-images-idx3-ubyte", 2051, 60000),
    "train_labels": ("train-labels-idx1-ubyte", 2049, 60000),
    "test_images": ("t10k-images-idx3-ubyte", 2051, 10000),
    "test_labels": ("t10k-labels-idx1-ubyte", 2049, 10000),
}
DEFAULT_ROOT = "./data"


class DataError(UserError):
    """Bad or missing data; the message names the file and the fix. The CLI turns it into exit code 2."""


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get("MNIST_ROOT") or DEFAULT_ROOT)


def _find(raw: Path, name: str) -> Path | None:
    for cand in (raw / name, raw / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


# MNIST's largest file is 47,040,016 bytes; a header that claims more than this is not MNIST (issue 18, B9).
MAX_IDX_BYTES = 64 << 20


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or .gz) of unsigned bytes into an array, checking every header field.

    The header is read and checked first, and the body read only up to the size it claims (plus one byte, to
    see trailing data): a truncated file, or one that is far too big (a disk image, ``/dev/zero``), is named
    before its bulk is read."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    fix = "replace it with an intact copy"
    try:
        if not path.is_file():
            raise DataError(f"{path}: not a regular file; {fix}")
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: truncated ({len(head)} bytes, no IDX header); {fix}")
            magic = int.from_bytes(head, "big")
            ndim = head[3]
            if head[:2] != b"\0\0" or head[2] != 0x08 or not 1 <= ndim <= 4 or (expect_magic and magic != expect_magic):
                want = f"0x{expect_magic:08x}" if expect_magic else "0x0000080N"
                raise DataError(
                    f"{path}: wrong magic number 0x{magic:08x} (expected {want}); "
                    "this is not an MNIST IDX file of unsigned bytes"
                )
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header; {fix}")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            header = 4 + 4 * ndim
            need = header + math.prod(shape)
            if need > MAX_IDX_BYTES:
                raise DataError(f"{path}: its header claims shape {shape} ({need:,} bytes), larger than MNIST; {fix}")
            if opener is open and (size := path.stat().st_size) != need:
                what = "truncated" if size < need else "has trailing bytes"
                raise DataError(f"{path}: {what}: {size} bytes, header shape {shape} needs {need}; {fix}")
            body = f.read(need - header + 1)
    except (OSError, EOFError, zlib.error) as e:  # a flipped byte in a .gz is a CRC or zlib error
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}); {fix}") from None
    if len(body) != need - header:
        what = "truncated" if len(body) < need - header else "has trailing bytes"
        got = header + len(body) if len(body) < need - header else f"more than {need}"
        raise DataError(f"{path}: {what}: {got} bytes, header shape {shape} needs {need}; {fix}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Inverse of read_idx for uint8 arrays (used by tests and tools that build small datasets)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(head + array.tobytes())


def _download(root: Path) -> None:
    from torchvision.datasets import MNIST  # imported here: only the download path needs it

    for train in (True, False):
        MNIST(root=str(root), train=train, download=True)


def _all_found(found: dict[str, Path | None]) -> dict[str, Path] | None:
    paths = {k: v for k, v in found.items() if v is not None}
    return paths if len(paths) == len(found) else None


def _locate(root: Path, download: bool) -> dict[str, Path]:
    raw = root / "MNIST" / "raw"
    found = {k: _find(raw, name) for k, (name, _, _) in FILES.items()}
    if (paths := _all_found(found)) is not None:
        return paths
    if download:
        new = [p for p in (raw, *raw.parents) if not p.exists()]  # deepest first
        try:
            _download(root)
        except Exception:  # no network, read-only folder, server down: all end in the same advice
            pass
        found = {k: _find(raw, name) for k, (name, _, _) in FILES.items()}
        if (paths := _all_found(found)) is not None:
            return paths
        for folder in new:  # a failed download leaves no empty MNIST/raw tree behind (the ninth sweep of issue 30)
            try:
                folder.rmdir()
            except OSError:  # not empty (a partial download), or never made
                pass
    missing = ", ".join(FILES[k][0] for k, v in found.items() if not v)
    raise DataError(
        f"MNIST not found: missing {missing} (raw or .gz) in {raw.resolve()}"
        f"{' and the download failed' if download else ''}; "
        "point --data-root or MNIST_ROOT at the folder that holds MNIST/raw/ "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)"
    )


@dataclass
class MNISTTensors:
    train_x: torch.Tensor  # (60000, 1, 28, 28) float32, normalized
    train_y: torch.Tensor  # (60000,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None  # held out of the training set by split_validation, when asked
    val_y: torch.Tensor | None = None

    def to(self, device) -> MNISTTensors:
        move = [t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)]
        val = [None if t is None else t.to(device) for t in (self.val_x, self.val_y)]
        return MNISTTensors(*move, *val)

    @property
    def val_images(self) -> int:
        return 0 if self.val_x is None else len(self.val_x)

    def subset(self, n_train: int, n_test: int) -> MNISTTensors:
        """The first N training and test images; a validation split is kept whole (it was carved out first,
        so it is the same set whatever subset trains)."""
        return MNISTTensors(
            self.train_x[:n_train],
            self.train_y[:n_train],
            self.test_x[:n_test],
            self.test_y[:n_test],
            self.val_x,
            self.val_y,
        )


# The validation split's own seed: one constant, so that the held-out images are the same for every run seed,
# every recipe and every machine (numpy's PCG64 stream is specified bit for bit, on every platform).
VAL_SPLIT_SEED = 20261203


def validation_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices of ``labels``, stratified: each digit's share of the split is its share of the labels
    (largest remainder, so the counts sum to ``n``), drawn from one fixed permutation. Sorted."""
    labels = np.asarray(labels)
    if not 0 < n < len(labels):
        raise ValueError(f"a validation split of {n} from {len(labels)} images")
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    chosen = [order[labels[order] == c][:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


def split_validation(data: MNISTTensors, n: int) -> MNISTTensors:
    """``data`` with ``n`` training images moved to a validation set (``validation_indices``); training keeps
    the rest, in their order."""
    idx = validation_indices(data.train_y.cpu().numpy(), n)
    keep = np.ones(len(data.train_y), dtype=bool)
    keep[idx] = False
    held = torch.from_numpy(idx).to(data.train_y.device)
    rest = torch.from_numpy(np.flatnonzero(keep)).to(data.train_y.device)
    return MNISTTensors(
        data.train_x[rest], data.train_y[rest], data.test_x, data.test_y, data.train_x[held], data.train_y[held]
    )


def _pair(img_path: Path, lbl_path: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(img_path, FILES["train_images"][1])
    labels = read_idx(lbl_path, FILES["train_labels"][1])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: images are {images.shape[1:]} pixels, expected 28x28; this is not MNIST")
    if labels.ndim != 1:
        raise DataError(f"{lbl_path}: labels have shape {labels.shape}, expected one dimension")
    if len(images) != len(labels):
        raise DataError(
            f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels; "
            "the files come from different sets"
        )
    if len(images) != count:
        raise DataError(f"{img_path}: {len(images)} images, expected {count}; replace it with the original")
    if labels.size and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(f"{lbl_path}: label {labels[bad]} at index {bad} is outside 0-9")
    return images, labels


def load_mnist(
    root: str | os.PathLike | None = None, device: str | torch.device = "cpu", download: bool = True
) -> MNISTTensors:
    """Validate every file, then put the whole dataset on ``device`` as normalized float32."""
    paths = _locate(resolve_root(root), download)
    tr = _pair(paths["train_images"], paths["train_labels"], FILES["train_images"][2])
    te = _pair(paths["test_images"], paths["test_labels"], FILES["test_images"][2])

    def images(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(a.copy()).to(device=device, dtype=torch.float32).unsqueeze(1)
        return (x / 255.0 - MEAN) / STD

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64)).to(device)

    return MNISTTensors(images(tr[0]), labels(tr[1]), images(te[0]), labels(te[1]))


def load_for_training(
    root: str | os.PathLike | None,
    device: str | torch.device,
    val_split: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> MNISTTensors:
    """What ``train`` and ``sweep`` train on: the validated data, the validation split carved out first (so it
    is the same set whatever subset trains), then the first N of the remaining training and test images."""
    data = load_mnist(root, device)
    if val_split:
        data = split_validation(data, val_split)
    if train_subset or test_subset:
        data = data.subset(train_subset or len(data.train_x), test_subset or len(data.test_x))
    return data


# The value a black (0) pixel has after normalization: what rotation and shifts must fill in at the borders.
BACKGROUND = (0.0 - MEAN) / STD


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    max_degrees: float,
    max_shift: float,
    max_scale: float = 0.0,
    prob: float = 1.0,
    *,
    max_shear: float = 0.0,
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 4.0,
    max_brightness: float = 0.0,
    max_contrast: float = 0.0,
) -> torch.Tensor:
    """Rotate each image by U(-max_degrees, max_degrees), shift it by U(-max_shift, max_shift) of its size
    and, with ``max_scale``, zoom it by U(1 - max_scale, 1 + max_scale); with ``max_shear``, shear it along x by
    U(-max_shear, max_shear) degrees; with ``elastic_alpha``, displace every pixel by a random field smoothed
    with a Gaussian of ``elastic_sigma`` pixels and scaled by ``elastic_alpha`` pixels (Simard et al., 2003).
    Then, with ``max_brightness``/``max_contrast``, each pixel value p in [0, 1] becomes
    clamp(p * U(1 - c, 1 + c) + U(-b, b), 0, 1) (albumentations' RandomBrightnessContrast).

    One affine_grid + grid_sample over the whole batch; the random draws come from ``generator`` only,
    so a run's augmentation is a pure function of its seed. With ``prob`` < 1 each image is moved with that
    probability (the anchors' ShiftScaleRotate(p=0.5)) and passes unmoved otherwise; brightness and contrast
    apply to every image. Each option's draws come after the older ones', so a recipe without it keeps its
    exact draws.
    """
    moved = max_degrees or max_shift or max_scale or max_shear or elastic_alpha
    out = (
        _move(x, generator, max_degrees, max_shift, max_scale, prob, max_shear, elastic_alpha, elastic_sigma)
        if moved
        else x
    )
    if max_brightness or max_contrast:
        out = _brightness_contrast(out, generator, max_brightness, max_contrast)
    return out  # without any option, exactly the input; grid_sample's identity is only exact to ~1e-5


def _move(x, generator, max_degrees, max_shift, max_scale, prob, max_shear, elastic_alpha, elastic_sigma):
    n = x.shape[0]

    def uniform(*shape: int) -> torch.Tensor:  # U(-1, 1)
        return torch.rand(*shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1

    u = uniform(n, 3)
    angle = u[:, 0] * math.radians(max_degrees)
    shift = u[:, 1:] * (2 * max_shift)  # affine_grid works in [-1, 1] coordinates: the image spans 2 units
    cos, sin = torch.cos(angle), torch.sin(angle)
    if max_scale:
        # The grid maps output to input coordinates: dividing by the zoom enlarges the digit when zoom > 1.
        zoom = 1 + uniform(n) * max_scale
        cos, sin = cos / zoom, sin / zoom
    # the rotation-zoom [[cos, -sin], [sin, cos]] times the shear [[1, t], [0, 1]]
    t = torch.tan(uniform(n) * math.radians(max_shear)) if max_shear else torch.zeros_like(cos)
    theta = torch.stack(
        [torch.stack([cos, cos * t - sin, shift[:, 0]], 1), torch.stack([sin, sin * t + cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic_alpha:
        grid = grid + _elastic_field(uniform(n, 2, *x.shape[2:]), elastic_alpha, elastic_sigma)
    # Sample the offset from the background so that pixels coming in from outside are black, not grey.
    out = F.grid_sample(x - BACKGROUND, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out + BACKGROUND
    if prob < 1:
        keep = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype) >= prob
        out = torch.where(keep[:, None, None, None], x, out)
    return out


def _elastic_field(noise: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """(N, 2, H, W) noise in U(-1, 1), smoothed by a normalised Gaussian of ``sigma`` pixels (separable, zero
    beyond the border), times ``alpha`` pixels: a grid offset (N, H, W, 2) in affine_grid's units."""
    n, _, h, w = noise.shape
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, device=noise.device, dtype=noise.dtype) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    d = F.conv2d(noise.reshape(n * 2, 1, h, w), k.view(1, 1, 1, -1), padding=(0, r))
    d = F.conv2d(d, k.view(1, 1, -1, 1), padding=(r, 0)).reshape(n, 2, h, w)
    scale = torch.tensor([2 * alpha / w, 2 * alpha / h], device=noise.device, dtype=noise.dtype)  # pixels -> grid
    return d.permute(0, 2, 3, 1) * scale


def _brightness_contrast(x: torch.Tensor, generator: torch.Generator, brightness: float, contrast: float):
    u = torch.rand(x.shape[0], 2, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
    a = (1 + u[:, 0] * contrast)[:, None, None, None]
    b = (u[:, 1] * brightness)[:, None, None, None]
    pixels = (x * STD + MEAN) * a + b  # in [0, 1] pixel units, before normalisation
    return (pixels.clamp(0, 1) - MEAN) / STD

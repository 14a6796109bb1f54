import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tinymnist.data import BACKGROUND, augment, read_idx, write_idx
from tinymnist.engine import epoch_permutation, get_batch
from tinymnist.recipes import STEP3


def test_dataset_normalized_once(mnist):
    assert mnist.train_x.shape == (60000, 1, 28, 28) and mnist.test_x.shape == (10000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.float32
    assert abs(mnist.train_x.mean().item()) < 1e-3 and abs(mnist.train_x.std().item() - 1) < 1e-3
    assert mnist.train_y.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert mnist.test_y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("epoch", [1, 2, 15])
def test_epoch_permutation_covers_every_image_once(epoch):
    perm, _ = epoch_permutation(0, epoch, 60000, torch.device("cpu"))
    assert torch.equal(perm.sort().values, torch.arange(60000))


def test_epochs_and_seeds_differ_in_order():
    p = {(s, e): epoch_permutation(s, e, 1000, torch.device("cpu"))[0] for s in (0, 1) for e in (1, 2)}
    assert not torch.equal(p[0, 1], p[0, 2]) and not torch.equal(p[0, 1], p[1, 1])
    assert torch.equal(p[0, 1], epoch_permutation(0, 1, 1000, torch.device("cpu"))[0])


def test_batch_keeps_labels(small_mnist):
    perm, gen = epoch_permutation(3, 1, len(small_mnist.train_x), torch.device("cpu"))
    idx = perm[:64]
    x, y = get_batch(small_mnist, idx, STEP3, gen)
    assert torch.equal(y, small_mnist.train_y[idx])
    # Image i of the batch is image idx[i] augmented: the pairing with its label is kept.
    _, gen2 = epoch_permutation(3, 1, len(small_mnist.train_x), torch.device("cpu"))
    expected = augment(small_mnist.train_x[idx], gen2, STEP3.max_degrees, STEP3.max_shift)
    assert torch.equal(x, expected) and not torch.equal(x, small_mnist.train_x[idx])


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 33), degrees=st.floats(0, 30), shift=st.floats(0, 0.2), seed=st.integers(0, 2**31))
def test_augment_keeps_shape_dtype_and_is_seeded(n, degrees, shift, seed):
    x = torch.randn(n, 1, 28, 28)
    a = augment(x, _gen(seed), degrees, shift)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert torch.equal(a, augment(x, _gen(seed), degrees, shift))


def test_zero_augmentation_is_identity():
    x = torch.randn(16, 1, 28, 28)
    assert torch.equal(augment(x, _gen(0), 0.0, 0.0), x)
    # A tiny angle is still the input up to interpolation rounding.
    torch.testing.assert_close(augment(x, _gen(0), 1e-9, 0.0), x, atol=1e-4, rtol=0)


def test_augmentation_fills_with_black():
    x = torch.full((4, 1, 28, 28), BACKGROUND)
    torch.testing.assert_close(augment(x, _gen(0), 30.0, 0.2), x, atol=1e-5, rtol=0)


def test_different_seeds_draw_differently():
    x = torch.randn(8, 1, 28, 28)
    assert not torch.equal(augment(x, _gen(0), 7, 0.1), augment(x, _gen(1), 7, 0.1))


def test_rotation_moves_mass_as_expected():
    """A bright pixel 6.5 px right of centre, turned by a drawn angle of more than 45 degrees, lands where the
    geometry says, to a pixel. No rotation, or one in the other direction, misses by more than 4 px."""
    seed = next(s for s in range(100) if abs(torch.rand(1, 3, generator=_gen(s))[0, 0].item() * 2 - 1) > 0.5)
    u = torch.rand(1, 3, generator=_gen(seed)) * 2 - 1  # the draws augment() will make
    angle = u[0, 0].item() * math.radians(90.0)
    x = torch.full((1, 1, 28, 28), BACKGROUND)
    x[0, 0, 14, 20] = 3.0
    out = augment(x, _gen(seed), 90.0, 0.0)[0, 0] - BACKGROUND
    w = out.clamp(min=0)
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cy, cx = (w * rows).sum() / w.sum(), (w * cols).sum() / w.sum()
    # affine_grid maps output to input by R(angle), so the pixel moves by R(-angle) about the centre (13.5).
    dx, dy = 20 - 13.5, 14 - 13.5
    want_x = 13.5 + math.cos(angle) * dx + math.sin(angle) * dy
    want_y = 13.5 - math.sin(angle) * dx + math.cos(angle) * dy
    assert abs(cx.item() - want_x) < 1.0 and abs(cy.item() - want_y) < 1.0
    wrong_y = 13.5 + math.sin(angle) * dx + math.cos(angle) * dy  # the other direction
    assert abs(want_y - wrong_y) > 4 and abs(want_y - 14) > 4


@settings(max_examples=30, deadline=None)
@given(arr=arrays(np.uint8, st.tuples(st.integers(0, 5), st.integers(1, 6), st.integers(1, 6))), gz=st.booleans())
def test_idx_round_trip(tmp_path_factory, arr, gz):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    assert np.array_equal(read_idx(path), arr)


def test_zoom_is_drawn_after_the_old_draws_and_enlarges():
    x = torch.randn(8, 1, 28, 28)
    # Without a zoom, the rotation and shift draws (and so every earlier recipe's data) are unchanged.
    assert torch.equal(augment(x, _gen(0), 7, 0.1, 0.0), augment(x, _gen(0), 7, 0.1))
    # A bright square grows under a zoom of at least 1.2 (max_scale 0.5 draws zooms in [0.5, 1.5]).
    sq = torch.full((64, 1, 28, 28), BACKGROUND)
    sq[:, :, 10:18, 10:18] = 3.0
    out = augment(sq, _gen(1), 0.0, 0.0, 0.5)
    g2 = _gen(1)
    torch.rand(64, 3, generator=g2)  # the rotation and shift draws augment() makes first
    zoom = 1 + (torch.rand(64, generator=g2) * 2 - 1) * 0.5
    area = (out > 1.0).flatten(1).sum(1).float()
    big, small = zoom > 1.2, zoom < 0.8
    assert big.any() and small.any()
    assert (area[big] > 64).all() and (area[small] < 64).all()


def test_idx_size_is_checked_against_the_header_before_the_body_is_read(tmp_path, monkeypatch):
    """Issue 18, B9: a header claiming a huge shape, or a file far larger than its header, is named before its
    bulk is read (a 4-byte read, a 16-byte read, then nothing)."""
    import builtins

    from tinymnist.data import DataError

    huge = tmp_path / "huge-idx3-ubyte"
    huge.write_bytes(bytes([0, 0, 8, 3]) + (10**9).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(DataError, match="larger than MNIST"):
        read_idx(huge, 2051)
    big = tmp_path / "big-idx1-ubyte"
    big.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\1" * 10 + b"\0" * (1 << 20))
    reads = []
    real_open = builtins.open

    class Spy:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(builtins, "open", lambda p, mode="r", *a, **k: Spy(real_open(p, mode, *a, **k)))
    with pytest.raises(DataError, match=r"has trailing bytes: 1048594 bytes, header shape \(10,\) needs 18"):
        read_idx(big, 2049)
    monkeypatch.undo()
    assert reads == [4, 4]  # the magic, the one dimension: never the megabyte behind them

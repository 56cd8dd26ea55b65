"""The fixed-shape pieces of the exact marginal's kernels (flowspec.marginal): the grouped
search for a block's band candidates, the even block layout and zero-weight padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec import marginal as mg


@st.composite
def blocks_and_floors(draw):
    batch = draw(st.integers(1, 5))
    size = draw(st.integers(1, 80))
    # few distinct values: ties, whole groups in or out of the band, empty bands
    g = np.array(draw(st.lists(st.integers(-6, 6), min_size=batch * size, max_size=batch * size)))
    g = g.reshape(batch, size).astype(np.float64)
    floor = np.array(draw(st.lists(st.integers(-7, 7), min_size=batch, max_size=batch)))
    return g, floor.astype(np.float64)


@given(blocks_and_floors(), st.integers(1, 9), st.sampled_from([1, 2, 4, 16]))
def test_grouped_select_holds_the_whole_band_or_flags_the_row(xp, case, capacity, group):
    g, floor = case
    select = mg.grouped_select(xp, capacity, group=group)
    cols, valid, overflow = (to_numpy(a) for a in select(xp.asarray(g), xp.asarray(floor)))
    band = g >= floor[:, None]
    count = band.sum(axis=1)
    np.testing.assert_array_equal(overflow, count > capacity)
    assert cols.shape == valid.shape and cols.shape[1] <= max(capacity, 1)
    for row in range(g.shape[0]):
        taken = cols[row][valid[row]]
        assert np.all(np.diff(taken) > 0), "the candidates are ascending and distinct"
        assert np.all(band[row, taken]), "every valid candidate is in the band"
        if not overflow[row]:
            np.testing.assert_array_equal(taken, np.flatnonzero(band[row]))


@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 45), st.data())
def test_first_columns_are_the_first_true_columns_ascending(xp, batch, width, count, data):
    mask = np.array(
        data.draw(st.lists(st.booleans(), min_size=batch * width, max_size=batch * width))
    )
    mask = mask.reshape(batch, width)
    got = to_numpy(mg.first_columns(xp, xp.asarray(mask), count))
    assert got.shape == (batch, count)
    for row in range(batch):
        want = np.flatnonzero(mask[row])[:count]
        want = np.concatenate([want, np.full(count - want.size, width)])
        np.testing.assert_array_equal(got[row], want)


@given(st.integers(1, 10**6), st.integers(1, 5000), st.sampled_from([1, 16, 64]))
def test_block_layout_is_even_within_the_block_size(n, block, group):
    blocks, size = mg.block_layout(n, block, group)
    assert 1 <= size <= block
    assert blocks == -(-n // block), "no more blocks than blocks of `block` points need"
    assert (blocks - 1) * size < n <= blocks * size, "the last block holds real points"
    assert blocks * size - n < blocks * group, "padding: under a group per block"


def test_a_block_padded_with_zero_weight_points_has_the_same_partial(xp):
    rng = np.random.default_rng(31)
    data = rng.normal(size=(13, 3))
    x = rng.normal(size=(4, 3))
    t = np.array([0.2, 0.5, 0.9, 0.999])
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    arr = mg.prepare_data(xp, xp.asarray(data))
    c = path.schedule.arrays(xp, xp.asarray(t))
    rows = mg.query_rows(xp, xp.asarray(x), c.alpha, c.sigma, arr.mean, arr.y_max, arr.lq_max)
    plain = mg.block_partial(xp, rows, arr.pts, arr.aug_t, arr.log_q, offset=5)
    padded = mg.pad_points(xp, arr.pts, arr.aug_t, arr.log_q, 7)
    assert [int(a.shape[-1 if i == 1 else 0]) for i, a in enumerate(padded)] == [20, 20, 20]
    assert math.isinf(float(to_numpy(padded[2])[-1]))
    other = mg.block_partial(xp, rows, *padded, offset=5)
    np.testing.assert_array_equal(to_numpy(plain.index), to_numpy(other.index))
    for name in ("anchor", "log_q", "mass", "first", "second"):
        a, b = to_numpy(getattr(plain, name)), to_numpy(getattr(other, name))
        # the same points' terms; only the matrix product's blocking may differ
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_sizes_are_checked_and_named():
    mask = np.zeros((2, 3), dtype=bool)
    for call, name in (
        (lambda: mg.first_columns(np, mask, -1), "count"),
        (lambda: mg.first_columns(np, mask, 1.0), "count"),
        (lambda: mg.grouped_select(np, 0), "capacity"),
        (lambda: mg.grouped_select(np, True), "capacity"),
        (lambda: mg.grouped_select(np, 4, group=0), "group"),
        (lambda: mg.block_layout(0, 16), "n"),
        (lambda: mg.block_layout(10, 0), "block"),
        (lambda: mg.pad_points(np, np.zeros((2, 3)), np.zeros((4, 2)), np.zeros(2), -2), "count"),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            call()


def test_where_rows_takes_each_row_from_one_partial_and_empty_rows_merge_to_nothing(xp):
    rng = np.random.default_rng(32)
    data = rng.normal(size=(9, 2))
    x = rng.normal(size=(5, 2))
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    arr = mg.prepare_data(xp, xp.asarray(data))
    c = path.schedule.arrays(xp, xp.asarray(np.full(5, 0.6)))
    rows = mg.query_rows(xp, xp.asarray(x), c.alpha, c.sigma, arr.mean, arr.y_max, arr.lq_max)
    a = mg.block_partial(xp, rows, arr.pts[:4, ...], arr.aug_t[:, :4], arr.log_q[:4])
    b = mg.block_partial(xp, rows, arr.pts[4:, ...], arr.aug_t[:, 4:], arr.log_q[4:], offset=4)
    mask = np.array([True, False, True, False, False])
    mixed = mg.where_rows(xp, xp.asarray(mask), a, b)
    for u, v, w in zip(mixed, a, b, strict=True):
        u, v, w = to_numpy(u), to_numpy(v), to_numpy(w)
        np.testing.assert_array_equal(u[mask], v[mask])
        np.testing.assert_array_equal(u[~mask], w[~mask])
    # rows left out (empty) and merged in later give the whole: the two-pass kernels
    empty = mg.empty_partial(xp, rows)
    first = mg.merge_partials(xp, rows, a, mg.where_rows(xp, xp.asarray(mask), empty, b))
    second = mg.merge_partials(xp, rows, first, mg.where_rows(xp, xp.asarray(mask), b, empty))
    whole = mg.merge_partials(xp, rows, a, b)
    for u, v in zip(second, whole, strict=True):
        np.testing.assert_array_equal(to_numpy(u), to_numpy(v))

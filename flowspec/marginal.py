r"""The exact marginal path and vector field of an empirical data distribution (eq. 6 and 8).

For data :math:`q = \sum_i q_i \delta_{x_1^{(i)}}` (uniform :math:`q_i = 1/N` unless
weights are given) and a Gaussian conditional path
:math:`p_t(x \mid x_1) = \mathcal N(\alpha_t x_1, \sigma_t^2 I)`, the marginal path of
eq. 6 is a Gaussian mixture and the marginal field of eq. 8 is a posterior average:

.. math::
    \begin{aligned}
    p_t(x) &= \sum_i q_i\, \mathcal N(x \mid \alpha_t x_1^{(i)}, \sigma_t^2 I), \\
    w_i(x, t) &= \frac{q_i\, p_t(x \mid x_1^{(i)})}{p_t(x)}, \\
    \hat x_1(x, t) &= \sum_i w_i\, x_1^{(i)},
    \end{aligned}

.. math::
    u_t(x) = \sum_i w_i\, u_t(x \mid x_1^{(i)})
           = \frac{\dot\sigma_t}{\sigma_t}\,(x - \alpha_t \hat x_1) + \dot\alpha_t\, \hat x_1 .

The posterior weights are a softmax of the log-weights
:math:`\ell_i = -\lVert x - \alpha_t x_1^{(i)} \rVert^2 / (2\sigma_t^2) + \log q_i`.

Computation. Nothing of shape (B, N, D) is ever formed. The data are stored centred
at their (weighted) mean together with their squared norms and log-weights, so that
the log-weights of a block of data points come out of *one* matrix product of an
augmented query ``[x * alpha / sigma^2, -alpha^2 / (2 sigma^2), 1]`` with the augmented
data ``[x1, ||x1||^2, log q]`` (the *streamed* log-weights, up to the per-row constant
``-||x||^2 / (2 sigma^2)``). The data are streamed in blocks of ``chunk_size`` points;
each block gives a small partial statistic (:func:`block_partial`) and partials are
combined by an associative merge (:func:`merge_partials`), an online log-sum-exp.
Peak extra memory is a few (B, chunk_size) blocks.

Error model and the exact band. The matrix-product form carries an absolute error of
at most ``E = gamma * (|alpha| |x| max|x1| / sigma^2 + alpha^2 max|x1|^2 / (2 sigma^2)
+ max|log q|)`` per streamed log-weight (``gamma = n u / (1 - n u)``, ``n = 2 D + 8``,
``u`` the unit roundoff; data and query centred), which is large where sigma is small
or the dtype short, and which cancels all relative accuracy exactly where a point
dominates. So within each block, every point whose streamed log-weight lies within
``T = 2E + max(0, log(expm1(2E) / u))`` of the block's maximum is *recomputed exactly*
by direct subtraction, :math:`\ell_i = \log q_i - \lVert x - \alpha_t x_1^{(i)}
\rVert^2 / (2\sigma_t^2)`: every point that could be the true maximum or tie with it
(2E), and every point whose streamed weight could be wrong by more than ``u`` relative
to the maximum (the second term). When a block holds such a point besides its
arg-max, the whole block is recomputed exactly (in sub-blocks, so memory stays
O(B x chunk_size)); otherwise only the arg-max is, and the other weights are taken
relative to it, ``l_k + (g_i - g_k)``, never through the large absolute values. So
duplicated or nearly duplicated points get identical or exactly ordered weights, and
every weight is relative to an exactly computed row maximum (far queries, alpha = 0).

Each partial is held relative to its *anchor* (its largest exact log-weight, point a):
the anchor's log-weight ``ref``, the anchor point itself, and the sums over the other
points of ``e_i = exp(l_i - ref)``, ``e_i (x1_i - x1_a)`` and ``e_i ||x1_i - x1_a||^2``.
So in the one-hot limit the posterior mean is exactly the anchor and the covariance
trace exactly 0, not the difference of two large numbers; the merge only rebases
the smaller partial onto the larger one's anchor. Posterior rows are normalised by
their own sum, so they sum to one within a few ulp times N.

See ``docs/marginal.md`` for the derivation of the closed-form divergence.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from . import validation as _xp
from .paths import GaussianPath
from .typing import Array

__all__ = [
    "GROUP",
    "QUANTITIES",
    "DataArrays",
    "EmpiricalMarginal",
    "Partial",
    "PosteriorStats",
    "Rows",
    "block_layout",
    "block_partial",
    "block_partial_capped",
    "block_posterior_log_weights",
    "check_tolerance",
    "empty_partial",
    "finish",
    "first_columns",
    "grouped_select",
    "log_weight_gap",
    "merge_all",
    "merge_partials",
    "pad_points",
    "prepare_data",
    "query_inputs",
    "query_rows",
    "readout",
    "summary",
    "where_rows",
]


#: Default number of (query, data point) pairs per streamed block: chunk_size is
#: ``max(1, BLOCK_ELEMENTS // B)`` data points (16 MiB per float32 block).
BLOCK_ELEMENTS = 1 << 22


class Rows(NamedTuple):
    """Per-query-row constants of one call (all shape (B, ...), in the data's dtype)."""

    xc: Array  # (B, D): x - alpha * mean, the centred query
    alpha: Array  # (B,)
    inv2: Array  # (B,): 1 / (2 sigma^2)
    query: Array  # (B, D + 2): the augmented query [xc alpha / sigma^2, -alpha^2 / (2 sigma^2), 1]
    band: Array  # (B,): T, the width of the exact band below a block's maximum


class Partial(NamedTuple):
    """The posterior statistics of a set of data points, relative to its anchor a.

    The anchor is the point of largest log-weight; ``mass``, ``first`` and ``second`` sum
    ``e_i = exp(l_i - l_a)``, ``e_i (y_i - y_a)`` and ``e_i ||y_i - y_a||^2`` over the
    *other* points (y: centred data), so the anchor's own weight is exactly 1 and the
    one-hot limit is exact. No absolute log-weight is stored: partials are compared
    through :func:`log_weight_gap`, which is accurate relative to the difference.
    """

    anchor: Array  # (B, D): the anchor point y_a
    log_q: Array  # (B,): its log-weight log q_a
    mass: Array  # (B,)
    first: Array  # (B, D)
    second: Array  # (B,)
    index: Array  # (B,), integer: the anchor's index in the whole data set


#: Events of at most this many coordinates are handled one coordinate at a time on
#: (B, c) planes: a trailing axis that short makes elementwise loops over (B, c, D) slow.
_PLANES = 16


def log_weight_gap(
    xp: Any, rows: Rows, y_a: Array, lq_a: Array, y_b: Array, lq_b: Array, planes: bool = True
) -> Array:
    """``l_b - l_a`` in difference form, accurate relative to the difference itself.

    With ``r = xc - alpha y``: ``||r_b||^2 - ||r_a||^2 = (r_b - r_a) . (r_b + r_a)`` and
    ``r_b - r_a = alpha (y_a - y_b)``, so no large absolute log-weight (of size
    ``||x||^2 / 2 sigma^2``) is ever formed or subtracted. Broadcasts: ``y_b`` may be
    (B, D) or (B, c, D) with ``y_a`` (B, D) or (B, 1, D).
    """
    alpha = rows.alpha if y_b.ndim == 2 else rows.alpha[:, None]
    inv2 = rows.inv2 if y_b.ndim == 2 else rows.inv2[:, None]
    xc = rows.xc if y_b.ndim == 2 else rows.xc[:, None, :]
    if planes and y_b.ndim == 3 and int(y_b.shape[-1]) <= _PLANES:
        dot = None
        for j in range(int(y_b.shape[-1])):
            ya, yb = y_a[..., j], y_b[..., j]
            term = (ya - yb) * (2.0 * xc[..., j] - alpha * (ya + yb))
            dot = term if dot is None else dot + term
    else:
        a3 = alpha[..., None]
        dot = xp.sum((y_a - y_b) * (2.0 * xc - a3 * (y_a + y_b)), axis=-1)
    return (lq_b - lq_a) - alpha * dot * inv2


class _Block(NamedTuple):
    """The log-weights of one block of c data points for B query rows.

    ``g`` (B, c) are the streamed log-weights (up to a per-row constant), ``g_top`` (B,)
    their value at the row's streamed arg-max k and ``floor`` (B,) the bottom of the
    exact band: the points with ``g >= floor`` (k among them), whose mask is ``band``
    where it was formed (None where a ``select`` took the candidates from ``floor``, so
    that a compiler fuses the comparison into its uses). The K candidates (every
    point in the band) carry their block-local column ``cols`` (B, K), a ``valid`` mask
    and their *exact* ``gaps = l_i - l_k``. The block's anchor (largest exact
    log-weight) is column ``anchor`` with gap ``top``. ``cols`` is None where the whole
    block is recomputed (a band wider than half the block, or a traced one): then
    K = c and slot j is column j; ``traced`` says the latter, evaluated in whole-block
    broadcast expressions a compiler fuses into its reductions (no (B, c, D) array in
    memory). ``overflow`` (B,) marks the rows whose band held more points than a
    fixed-capacity ``select`` could take (None without).
    """

    g: Array
    g_top: Array
    floor: Array
    band: Array | None
    cols: Array | None
    valid: Array
    gaps: Array
    top: Array
    anchor: Array
    overflow: Array | None
    traced: bool

    def relative(self) -> tuple[Array, Array]:
        """The streamed ``g_i - g_k`` (B, c) and the band mask ``g >= floor`` (B, c)."""
        band = self.g >= self.floor[:, None] if self.band is None else self.band
        return self.g - self.g_top[:, None], band


#: ``select(g, floor) -> (cols, valid, overflow)``: a fixed number K of candidate
#: columns per row (B, K), ascending, holding every column of the band
#: ``g >= floor[:, None]`` whenever the band has at most K; ``valid`` (B, K) marks those
#: in the band, ``overflow`` (B,) the rows whose band has more than K.
Select = Callable[[Array, Array], tuple[Array, Array, Array]]


#: Columns per group in the candidate search of :func:`grouped_select`.
GROUP = 16


def first_columns(xp: Any, mask: Array, count: int) -> Array:
    """The first ``count`` True columns of each row of a (B, c) ``mask``, ascending.

    Shape (B, count); ``c`` (the mask's width) in the slots of a row with fewer. One
    masked min-reduction per slot: a compiler runs each as one loop over the mask, which
    for a few slots costs less than a sort or a top-k.
    """
    count = _xp.integer("count", count, 0)
    width, dev = int(mask.shape[1]), _xp.device(mask)
    index = xp.arange(width, device=dev)[None, :]
    last = xp.full((int(mask.shape[0]), 1), -1, dtype=index.dtype, device=dev)
    found = [last[:, :0]]
    for _ in range(count):
        last = xp.min(xp.where(mask & (index > last), index, width), axis=1, keepdims=True)
        found.append(last)
    return xp.concat(found, axis=1)


def grouped_select(
    xp: Any,
    capacity: int,
    first: Callable[[Array, int], Array] | None = None,
    group: int = GROUP,
) -> Select:
    """A :data:`Select` of fixed capacity K that never ranks the whole block.

    The maximum of each group of ``group`` consecutive columns (one pass over the
    block; single columns where the block does not split into such groups), the first
    K groups that reach the band, and among their K x ``group`` columns the first K in
    the band: ascending by construction, and the whole band wherever it holds at most K
    points. A row whose band holds more reaches more than K groups or has more than K
    band columns in them, and is flagged. ``first(mask, k)`` picks the first k True
    columns of each row (default :func:`first_columns`; a backend may pass a top-k for
    large k).
    """
    capacity = _xp.integer("capacity", capacity, 1)
    group = _xp.integer("group", group, 1)
    pick = (lambda mask, k: first_columns(xp, mask, k)) if first is None else first

    def select(g: Array, floor: Array) -> tuple[Array, Array, Array]:
        batch, size = int(g.shape[0]), int(g.shape[1])
        lower = floor[:, None]
        width = group if size % group == 0 else 1
        groups = size // width
        k = min(capacity, groups)
        peak = g if width == 1 else xp.max(xp.reshape(g, (batch, groups, width)), axis=2)
        reach = peak >= lower
        chosen = pick(reach, k)  # (B, k) groups, `groups` where a row reaches fewer
        overflow = xp.sum(xp.astype(reach, xp.int32), axis=1) > k
        real = chosen < groups
        chosen = xp.where(real, chosen, xp.zeros_like(chosen))
        if width == 1:
            return chosen, real, overflow
        offsets = xp.arange(width, device=_xp.device(g))
        cols = xp.reshape(chosen[:, :, None] * width + offsets, (batch, k * width))
        real = xp.reshape(xp.broadcast_to(real[:, :, None], (batch, k, width)), (batch, -1))
        inside = (_take_rows(xp, g, cols) >= lower) & real
        kk = min(capacity, k * width)
        slots = pick(inside, kk)  # (B, kk), k * width where a row has fewer
        valid = slots < k * width
        cols = _take_rows(xp, cols, xp.where(valid, slots, xp.zeros_like(slots)))
        overflow = overflow | (xp.sum(xp.astype(inside, xp.int32), axis=1) > kk)
        return cols, valid, overflow

    return select


def block_layout(n: int, block: int, group: int = GROUP) -> tuple[int, int]:
    """``(blocks, size)``: n points in blocks of ``size <= block`` points, as even as
    possible (a multiple of ``group`` where that keeps it within ``block``), so that a
    fixed-shape kernel pads the last block with fewer than ``size`` points, not with up
    to a whole block; see :func:`pad_points`."""
    n, block = _xp.integer("n", n, 1), _xp.integer("block", block, 1)
    group = _xp.integer("group", group, 1)
    blocks = -(-n // block)
    size = -(-n // blocks)
    rounded = -(-size // group) * group
    size = rounded if rounded <= block else size
    return -(-n // size), size


def pad_points(
    xp: Any, pts: Array, aug_t: Array, log_q: Array, count: int
) -> tuple[Array, Array, Array]:
    """The prepared points of a block with ``count`` zero-weight points appended.

    Their log-weight is ``log q = -inf``, so they never enter a band, an anchor or a sum:
    a block padded to a fixed shape has the partial of its real points.
    """
    count = _xp.integer("count", count, 0)
    dev = _xp.device(pts)
    zeros = xp.zeros((count, int(pts.shape[1])), dtype=pts.dtype, device=dev)
    none = xp.full((count,), -math.inf, dtype=pts.dtype, device=dev)
    filler = xp.concat([xp.matrix_transpose(zeros), none[None, :]], axis=0)
    return (
        xp.concat([pts, zeros], axis=0),
        xp.concat([aug_t, filler], axis=1),
        xp.concat([log_q, none], axis=0),
    )


def _candidates(xp: Any, band: Array) -> tuple[Array | None, Array, bool]:
    """The band's columns row by row, as (B, K) ``cols`` and ``valid`` (K = largest count).

    Read from the host-side mask (``nonzero``). Where the band is wider than half the
    block, gathering its points costs more than taking the whole block, and where the
    mask is traced (e.g. under ``jax.jit``) its values cannot shape an array: in both
    cases ``cols`` is None, every column is a candidate, valid where in the band
    (exact everywhere, at O(B c D) cost, no gathers). The flag says "traced".
    """
    batch, size = int(band.shape[0]), int(band.shape[1])
    dev = _xp.device(band)
    count = xp.sum(xp.astype(band, xp.int32), axis=1)  # (int32: no x64 needed in JAX)
    try:
        width = int(xp.max(count))
    except TypeError:  # traced (JAX's concretization errors are TypeErrors)
        return None, band, True
    if 2 * width > size:
        return None, band, False
    _, flat_cols = xp.nonzero(band)  # row-major: the rows' columns one after another
    start = xp.cumulative_sum(count) - count
    slot = xp.arange(width, device=dev)
    valid = slot[None, :] < count[:, None]
    pos = xp.where(valid, start[:, None] + slot[None, :], xp.zeros_like(start)[:, None])
    cols = xp.reshape(xp.take(flat_cols, xp.reshape(pos, (-1,)), axis=0), (batch, width))
    return cols, valid, False


def _gather(xp: Any, block: Array, cols: Array) -> Array:
    """``block[cols]`` for (B, K) block-local columns: shape (B, K, *block.shape[1:])."""
    flat = xp.take(block, xp.reshape(cols, (-1,)), axis=0)
    return xp.reshape(flat, (*cols.shape, *block.shape[1:]))


def _slots(xp: Any, block: Array, cols: Array | None, a: int, b: int) -> Array:
    """The rows of ``block`` in candidate slots a:b: (B, b - a, ...) gathered by ``cols``,
    or (1, b - a, ...) for a whole block (``cols`` None: slot j is column j), which
    broadcasts against the (B, 1, ...) row quantities without a copy."""
    if cols is None:
        return xp.expand_dims(block[a:b, ...], axis=0)
    return _gather(xp, block, cols[:, a:b])


def _groups(width: int, dim: int, size: int, traced: bool = False) -> list[tuple[int, int]]:
    """Slot groups of at most ``max(1, size // dim)`` slots, so that the (B, group, D)
    temporaries stay within the (B, size) block budget (one group where traced: the
    compiler fuses the broadcasts into the reductions)."""
    if traced:
        return [(0, width)]
    step = max(1, size // max(1, dim))
    return [(s, min(s + step, width)) for s in range(0, width, step)]


def _block_log_weights(
    xp: Any,
    rows: Rows,
    pts: Array,
    aug_t: Array,
    log_q: Array,
    select: Select | None = None,
    fused: bool = False,
) -> _Block:
    """The log-weights of one block of data points, exact in the band (see :class:`_Block`).

    One matrix product gives the streamed log-weights g (up to a per-row constant);
    every point within ``rows.band`` of the row's maximum g_k (k included) is then
    recomputed exactly, relative to k, by :func:`log_weight_gap` (difference form).
    Cost: the matrix product plus O(B K D) for K band points per row.

    Parameters
    ----------
    pts, aug_t, log_q
        The block's centred points and squared norms ``[y, ||y||^2]`` (c, D + 1), the
        augmented data transposed (D + 2, c) and the log-weights (c,).
    select
        Optional fixed-capacity choice of the candidates (static shapes, e.g. under
        ``jax.jit``); rows whose band overflows it are flagged in ``overflow``.
    fused
        With ``select``: the candidates in one broadcast group (a compiler fuses it;
        eager libraries would hold a (B, K, D) array).
    """
    d = int(pts.shape[1]) - 1
    size = int(pts.shape[0])
    g = xp.matmul(rows.query, aug_t)  # streamed log-weights + ||xc||^2 / (2 sigma^2)
    batch = int(g.shape[0])
    if select is not None and size % GROUP == 0:
        # the row maxima through the maxima of groups of GROUP columns, the expression
        # grouped_select forms too: a compiler reads the block once for both
        row_max = xp.max(xp.max(xp.reshape(g, (batch, size // GROUP, GROUP)), axis=2), axis=1)
    else:
        row_max = xp.max(g, axis=1)
    floor = row_max - rows.band  # the band: g >= floor (the arg-max included)
    overflow = band = None
    if select is None:
        band = g >= floor[:, None]
        cols, valid, traced = _candidates(xp, band)
    else:
        cols, valid, overflow = select(g, floor)
        traced = fused
    # the streamed arg-max k, the first of the largest: read among the candidates, which
    # hold it (ascending columns, so the first maximal slot is the smallest column)
    if cols is None:
        k = xp.argmax(g, axis=1)
    else:
        g_c = xp.where(
            valid, _take_rows(xp, g, cols), xp.full(cols.shape, -math.inf, dtype=g.dtype)
        )
        k = _at(xp, cols, xp.argmax(g_c, axis=1))
    # the maximum read at k, not by max(): under autodiff its derivative is then that
    # of the point k whose exact log-weight it is paired with below, also at ties
    g_max = _at(xp, g, k)
    # a block of zero-weight points only: g_max = -inf; keep the differences -inf
    g_top = xp.where(g_max > -math.inf, g_max, xp.zeros_like(g_max))
    width = size if cols is None else int(cols.shape[1])
    y_k = xp.take(pts, k, axis=0)[:, None, :d]
    lq_k = xp.take(log_q, k, axis=0)
    lq_k = xp.where(lq_k > -math.inf, lq_k, xp.zeros_like(lq_k))[:, None]
    parts = []
    for a, b in _groups(width, d, size, traced):
        y = _slots(xp, pts, cols, a, b)[..., :d]
        lq = _slots(xp, log_q, cols, a, b)
        gap = log_weight_gap(xp, rows, y_k, lq_k, y, lq, planes=not traced)
        parts.append(xp.where(valid[:, a:b], gap, xp.full_like(gap, -math.inf)))
    gaps = xp.concat(parts, axis=1) if len(parts) > 1 else parts[0]
    slot = xp.argmax(gaps, axis=1)  # the first of tied slots: the smallest column
    top = _at(xp, gaps, slot)  # the anchor's own gap (its derivative, also at ties)
    anchor = slot if cols is None else _at(xp, cols, slot)
    top = xp.where(top > -math.inf, top, xp.zeros_like(top))
    return _Block(g, g_top, floor, band, cols, valid, gaps, top, anchor, overflow, traced)


def _take_rows(xp: Any, a: Array, cols: Array) -> Array:
    """``a[i, cols[i, j]]`` for a (B, c) array and (B, K) columns, by one gather."""
    width = int(a.shape[1])
    flat = xp.arange(int(a.shape[0]), device=_xp.device(a))[:, None] * width + cols
    return xp.reshape(xp.take(xp.reshape(a, (-1,)), xp.reshape(flat, (-1,)), axis=0), cols.shape)


def _at(xp: Any, a: Array, j: Array) -> Array:
    """``a[i, j[i]]`` for a (B, c) array and (B,) column indices, by one gather."""
    return _take_rows(xp, a, j[:, None])[:, 0]


def _partial(
    xp: Any,
    rows: Rows,
    pts: Array,
    aug_t: Array,
    log_q: Array,
    offset: Any,
    select: Select | None,
    exp: Callable[[Array], Array] | None,
    fused: bool = False,
) -> tuple[Partial, Array | None]:
    d = int(pts.shape[1]) - 1
    size = int(pts.shape[0])
    blk = _block_log_weights(xp, rows, pts, aug_t, log_q, select, fused)
    row_a = xp.take(pts, blk.anchor, axis=0)
    y_a, n_a = row_a[:, :d], row_a[:, d]
    # the points outside the band, relative to the anchor
    rel, band = blk.relative()
    shifted = rel - blk.top[:, None]
    e = xp.exp(shifted) if exp is None else exp(shifted)
    e = xp.where(band, xp.zeros_like(e), e)
    mass = xp.sum(e, axis=1)
    sums = xp.matmul(e, pts)
    s1 = sums[:, :d]
    first = s1 - mass[:, None] * y_a
    second = sums[:, d] - 2.0 * xp.sum(y_a * s1, axis=1) + mass * n_a
    # the band points other than the anchor, exactly relative to it
    cols = blk.cols
    if cols is None:
        cols = xp.arange(size, device=_xp.device(blk.gaps))[None, :]
    is_anchor = cols == blk.anchor[:, None]
    w = xp.where(is_anchor, xp.zeros_like(blk.gaps), xp.exp(blk.gaps - blk.top[:, None]))
    mass = mass + xp.sum(w, axis=1)
    for a, b in _groups(int(blk.gaps.shape[1]), d, size, blk.traced):
        w_ab = w[:, a:b]
        y = _slots(xp, pts, blk.cols, a, b)
        if d <= _PLANES and not blk.traced:  # coordinate by coordinate, on (B, b - a) planes
            parts, square = [], None
            for j in range(d):
                diff_j = y[..., j] - y_a[:, j : j + 1]
                parts.append(xp.sum(w_ab * diff_j, axis=1))
                square = diff_j * diff_j if square is None else square + diff_j * diff_j
            first = first + xp.stack(parts, axis=1)
            second = second + xp.sum(w_ab * square, axis=1)
        else:
            diff = y[..., :d] - y_a[:, None, :]
            first = first + xp.sum(w_ab[..., None] * diff, axis=1)
            second = second + xp.sum(w_ab * xp.sum(diff * diff, axis=2), axis=1)
    lq_a = xp.take(log_q, blk.anchor, axis=0)
    return Partial(y_a, lq_a, mass, first, second, blk.anchor + offset), blk.overflow


def block_partial(
    xp: Any,
    rows: Rows,
    pts: Array,
    aug_t: Array,
    log_q: Array,
    *,
    offset: Any = 0,
    exp: Callable[[Array], Array] | None = None,
) -> Partial:
    """The partial statistic of one block of data points (see :class:`Partial`).

    Independent of every other block, so blocks may be processed anywhere and in any
    order; combine the results with :func:`merge_partials`. The band points' sums are
    formed from exact differences ``y_i - y_a``; the others' from the streamed weights.
    ``offset`` is the index of the block's first point in the whole data set; ``exp``
    an optional backend kernel for the exponential of the (B, c) block of streamed
    log-weights relative to the anchor (-inf inside the band), which it may overwrite.
    """
    part, _ = _partial(xp, rows, pts, aug_t, log_q, offset, None, exp)
    return part


def block_partial_capped(
    xp: Any,
    rows: Rows,
    pts: Array,
    aug_t: Array,
    log_q: Array,
    select: Select,
    *,
    offset: Any = 0,
    exp: Callable[[Array], Array] | None = None,
    fused: bool = False,
) -> tuple[Partial, Array]:
    """:func:`block_partial` with a fixed number of band candidates per row (static shapes).

    ``select(g, floor)`` returns (B, K) candidate columns, ascending, their ``valid``
    mask (in the band) and ``overflow`` (B,), True where the band has more than K points
    (see :data:`Select`); the columns must hold the whole band of every other row (e.g.
    the top K of the streamed log-weights). Returns the partial and ``overflow``: where
    True the partial of that row is **not** the exact one, and the caller must use
    :func:`block_partial` (which recomputes every band point) instead. ``fused``: the
    candidates in one broadcast expression, for a compiler to fuse (``jax.jit``).
    """
    part, overflow = _partial(xp, rows, pts, aug_t, log_q, offset, select, exp, fused)
    assert overflow is not None
    return part, overflow


def block_posterior_log_weights(
    xp: Any, rows: Rows, pts: Array, aug_t: Array, log_q: Array
) -> tuple[Array, Array]:
    """Dense (B, c) log-weights of a block relative to its anchor, and the anchor column.

    The band's exact values are written into the streamed ones, one candidate slot at
    a time (K passes; only :meth:`EmpiricalMarginal.posterior` materialises these).
    """
    blk = _block_log_weights(xp, rows, pts, aug_t, log_q)
    streamed, band = blk.relative()
    rel = xp.where(band, xp.full_like(streamed, -math.inf), streamed) - blk.top[:, None]
    index = xp.arange(int(pts.shape[0]), device=_xp.device(rel))
    exact = blk.gaps - blk.top[:, None]
    if blk.cols is None:  # the whole block: slot j is column j
        return xp.where(blk.valid, exact, rel), blk.anchor
    for j in range(int(blk.cols.shape[1])):
        here = (index[None, :] == blk.cols[:, j : j + 1]) & blk.valid[:, j : j + 1]
        rel = xp.where(here, exact[:, j : j + 1], rel)
    return rel, blk.anchor


def merge_partials(xp: Any, rows: Rows, p: Partial, q: Partial) -> Partial:
    """Merge the partials of two disjoint sets of data points (associative, commutative).

    The partial whose anchor has the larger log-weight keeps its anchor (on an exact
    tie, e.g. duplicated points, the one of smaller index); the other is scaled by
    ``exp(l_a' - l_a)`` (the gap in difference form) and rebased onto that anchor
    (``d = y_a' - y_a``): ``sum e (y - y_a) = first' + (1 + mass') d`` and
    ``sum e ||y - y_a||^2 = second' + 2 d . first' + (1 + mass') ||d||^2``.
    """
    gap = log_weight_gap(xp, rows, p.anchor, p.log_q, q.anchor, q.log_q)  # l_q - l_p
    q_wins = (gap > 0.0) | ((gap == 0.0) & (q.index < p.index))

    def pick(mask: Array, u: Partial, v: Partial) -> Partial:
        m2 = mask[:, None]
        return Partial(
            xp.where(m2, u.anchor, v.anchor),
            xp.where(mask, u.log_q, v.log_q),
            xp.where(mask, u.mass, v.mass),
            xp.where(m2, u.first, v.first),
            xp.where(mask, u.second, v.second),
            xp.where(mask, u.index, v.index),
        )

    win, lose = pick(q_wins, q, p), pick(q_wins, p, q)
    # an all-zero-weight partial (log q_a = -inf) weighs nothing, whatever the gap says
    live = lose.log_q > -math.inf
    f = xp.where(live, xp.exp(xp.where(live, -xp.abs(gap), xp.zeros_like(gap))), xp.zeros_like(gap))
    total = 1.0 + lose.mass
    dd = lose.anchor - win.anchor
    first = win.first + f[:, None] * (lose.first + total[:, None] * dd)
    second = win.second + f * (
        lose.second + 2.0 * xp.sum(dd * lose.first, axis=1) + total * xp.sum(dd * dd, axis=1)
    )
    return Partial(win.anchor, win.log_q, win.mass + f * total, first, second, win.index)


def empty_partial(xp: Any, rows: Rows) -> Partial:
    """The partial of no data point: the identity of :func:`merge_partials` (its anchor
    weighs nothing, ``log q_a = -inf``), to start a running merge."""
    batch, dim = int(rows.xc.shape[0]), int(rows.xc.shape[1])
    dtype, dev = rows.xc.dtype, _xp.device(rows.xc)
    index = xp.arange(1, device=dev).dtype
    return Partial(
        xp.zeros((batch, dim), dtype=dtype, device=dev),
        xp.full((batch,), -math.inf, dtype=dtype, device=dev),
        xp.zeros((batch,), dtype=dtype, device=dev),
        xp.zeros((batch, dim), dtype=dtype, device=dev),
        xp.zeros((batch,), dtype=dtype, device=dev),
        xp.full((batch,), xp.iinfo(index).max, dtype=index, device=dev),
    )


def where_rows(xp: Any, mask: Array, p: Partial, q: Partial) -> Partial:
    """The partial whose row i is ``p``'s where ``mask[i]`` (B,), else ``q``'s: e.g. a
    block's partial with the rows whose band overflowed a capacity left out
    (``q`` = :func:`empty_partial`), to be merged in once recomputed."""
    return Partial(
        *(
            xp.where(xp.reshape(mask, (-1,) + (1,) * (u.ndim - 1)), u, v)
            for u, v in zip(p, q, strict=True)
        )
    )


def merge_all(xp: Any, rows: Rows, partials: Sequence[Partial]) -> Partial:
    """Merge a non-empty sequence of partials as a balanced tree (pairs, pairs of pairs)."""
    items = list(partials)
    if not items:
        raise ValueError("`partials` must hold at least one Partial")
    while len(items) > 1:
        merged = [
            merge_partials(xp, rows, items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)
        ]
        items = merged + ([items[-1]] if len(items) % 2 else [])
    return items[0]


def _band_width(xp: Any, rows_err: Array, dtype: Any, tolerance: float | None = None) -> Array:
    """T = 2E + max(0, log(expm1(2E) / tol)) from the streamed error bound E (B,);
    ``tol`` is ``tolerance``, by default the unit roundoff u of ``dtype``."""
    u = float(xp.finfo(dtype).eps) / 2.0 if tolerance is None else tolerance
    two_e = 2.0 * rows_err
    z = -xp.expm1(-two_e)  # log(expm1(2E)) = 2E + log(1 - exp(-2E)), no overflow
    positive = z > 0.0
    log_z = xp.where(positive, xp.log(xp.where(positive, z, xp.ones_like(z))), -math.inf)
    extra = two_e + log_z - math.log(u)
    return two_e + xp.maximum(extra, xp.zeros_like(extra))


def query_rows(
    xp: Any,
    flat: Array,
    alpha: Array,
    sigma: Array,
    mean: Array,
    y_max: Any,
    lq_max: Any,
    tolerance: float | None = None,
) -> Rows:
    """The per-query-row constants of one call, shared by every block of the data.

    ``flat`` (B, D) queries, ``alpha`` and ``sigma`` (B,) their coefficients, ``mean``
    (D,) the data's weighted mean, ``y_max`` the largest norm of a centred data point and
    ``lq_max`` the largest ``-log q`` of a point of positive weight (the sizes entering
    the streamed error bound E of the module docstring), all over the *whole* data set,
    so that blocks processed anywhere (another process, another machine) agree.
    ``tolerance`` (see :func:`check_tolerance`) sets the width of the exact band: the
    streamed weights left outside it err by at most that much relative to the largest
    weight of their block; by default the unit roundoff of the dtype.
    """
    xc = flat - alpha[:, None] * mean  # x - alpha * mean
    inv = 1.0 / (sigma * sigma)
    ones = xp.ones_like(alpha)
    query = xp.concat(
        [xc * (alpha * inv)[:, None], (-0.5 * alpha * alpha * inv)[:, None], ones[:, None]],
        axis=1,
    )
    # E: the streamed error bound, gamma_n times the sum of the terms' magnitudes
    u = float(xp.finfo(flat.dtype).eps) / 2.0
    n = 2 * int(flat.shape[1]) + 8
    gamma = n * u / (1.0 - n * u)
    x_norm = xp.sqrt(xp.sum(xc * xc, axis=1))
    size = xp.abs(alpha) * inv * x_norm * y_max + 0.5 * alpha * alpha * inv * y_max * y_max
    err = gamma * (size + lq_max)
    return Rows(xc, alpha, 0.5 * inv, query, _band_width(xp, err, flat.dtype, tolerance))


def check_tolerance(tolerance: Any) -> float | None:
    """Validate the ``tolerance`` of the exact band: None, or a real number in (0, 1].

    The exact band holds every point whose streamed log-weight lies within
    ``T = 2E + max(0, log(expm1(2E) / tolerance))`` of its block's maximum (E the
    streamed error bound): the points that could be the maximum or tie with it, and
    those whose streamed weight could err by more than ``tolerance`` relative to the
    largest weight of the block. None means the unit roundoff of the dtype: every
    weight then as accurate as the dtype allows. A larger tolerance narrows the band
    (fewer exact recomputations where the posterior is diffuse) at that cost in
    accuracy; the dominant points are recomputed exactly whatever it is.
    """
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"`tolerance` must be None or a real number, got {tolerance!r}")
    value = float(tolerance)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"`tolerance` must be in (0, 1], got {tolerance!r}")
    return value


def query_inputs(
    xp: Any, path: GaussianPath, x: Array, t: Any, dtype: Any, event: tuple[int, ...]
) -> tuple[Array, Array, Any]:
    """Validate a query batch against data of ``dtype`` and ``event``: ``(flat, t, c)``.

    ``x`` must be a floating (B, *event) array of the data's dtype (no silent casts);
    ``t`` is reshaped against it by :func:`flowspec.validation.time_array`. Returns the
    queries flattened to (B, D), the reshaped times and the schedule's coefficients.
    Shared by :class:`EmpiricalMarginal` and :class:`flowspec.distributed.DaskMarginal`.
    """
    _xp.check_float(xp, "x", x)
    if x.dtype != dtype:
        raise TypeError(
            f"`x` and `data` must share one floating dtype (no silent casts): `x` is "
            f"{x.dtype} but `data` is {dtype}"
        )
    _xp.check_batch("x", x)
    if tuple(int(s) for s in x.shape[1:]) != event:
        raise ValueError(
            f"`x` must have shape (B, *event) with event {event} as `data`, got "
            f"shape {tuple(x.shape)}"
        )
    tt = _xp.time_array(xp, t, x)
    c = path.schedule.arrays(xp, tt)
    batch = int(x.shape[0])
    return xp.reshape(x, (batch, math.prod(event))), tt, c


class PosteriorStats(NamedTuple):
    """The posterior statistics of a query batch, from the merged partial of all data."""

    log_z: Array  # (B,): log of the sum of the weights e^{l_i}
    y_hat: Array  # (B, D): the centred posterior mean
    trace: Array  # (B,): trace of the posterior covariance of the data points, >= 0
    max_weight: Array  # (B,): the posterior weight of the anchor (most probable point)
    top: Array  # (B,), integer: the anchor's index (the smallest one among exact ties)


def finish(xp: Any, rows: Rows, part: Partial) -> PosteriorStats:
    """The posterior statistics from the merged :class:`Partial` of *all* data points.

    The one absolute log-weight, the final anchor's, is formed by direct subtraction;
    the mean and covariance trace are relative to the anchor (exact one-hot limit).
    """
    r_a = rows.xc - rows.alpha[:, None] * part.anchor
    l_a = part.log_q - xp.sum(r_a * r_a, axis=1) * rows.inv2
    total = 1.0 + part.mass
    shift = part.first / total[:, None]  # denoise - anchor
    trace = part.second / total - xp.sum(shift * shift, axis=1)
    return PosteriorStats(
        l_a + xp.log1p(part.mass),
        part.anchor + shift,
        xp.maximum(trace, xp.zeros_like(trace)),
        1.0 / total,
        part.index,
    )


#: The quantities :func:`readout` forms from the posterior statistics.
QUANTITIES = ("log_prob", "denoise", "velocity", "score", "divergence")


def readout(xp: Any, name: str, rows: Rows, st: PosteriorStats, c: Any, mean: Array) -> Array:
    r"""One quantity of the exact marginal from the posterior statistics, flat.

    ``name`` is one of :data:`QUANTITIES`; ``c`` the schedule's coefficients at the
    query times (each field of shape (B,) or (B, 1, ..., 1)), ``mean`` the data mean
    (D,). Returns (B,) for ``log_prob`` and ``divergence``, (B, D) otherwise:

    * ``log_prob``: :math:`\log p_t(x) = \log Z - D\log\sigma_t - \tfrac D2\log 2\pi` (eq. 6);
    * ``denoise``: :math:`\hat x_1 = \sum_i w_i x_1^{(i)}`;
    * ``velocity``: :math:`u_t(x) = \tfrac{\dot\sigma_t}{\sigma_t}(x - \alpha_t\hat x_1)
      + \dot\alpha_t\hat x_1` (eq. 8), the residual formed directly (no cancellation
      where sigma is small);
    * ``score``: :math:`-(x - \alpha_t\hat x_1)/\sigma_t^2`;
    * ``divergence``: :math:`D\tfrac{\dot\sigma_t}{\sigma_t} + (\dot\alpha_t -
      \alpha_t\tfrac{\dot\sigma_t}{\sigma_t})\tfrac{\alpha_t}{\sigma_t^2}
      \operatorname{tr}\operatorname{Cov}_w[x_1]` (derivation in ``docs/marginal.md``).
    """
    batch, d = int(rows.xc.shape[0]), int(rows.xc.shape[1])
    alpha = rows.alpha
    sigma, d_alpha, d_sigma = (xp.reshape(v, (batch,)) for v in (c.sigma, c.d_alpha, c.d_sigma))
    if name == "log_prob":
        return st.log_z - d * xp.log(sigma) - 0.5 * d * math.log(2.0 * math.pi)
    if name == "denoise":
        return st.y_hat + mean
    ratio = d_sigma / sigma
    if name == "divergence":
        gain = (d_alpha - alpha * ratio) * alpha / (sigma * sigma)
        return d * ratio + gain * st.trace
    resid = rows.xc - alpha[:, None] * st.y_hat
    if name == "velocity":
        return ratio[:, None] * resid + d_alpha[:, None] * (st.y_hat + mean)
    if name == "score":
        return -resid / (sigma * sigma)[:, None]
    raise ValueError(f"`name` must be one of {QUANTITIES}, got {name!r}")


def summary(st: PosteriorStats) -> dict[str, Array]:
    """The public posterior summaries (each (B,)) from the posterior statistics."""
    return {
        "max_weight": st.max_weight,
        "top": st.top,
        "trace_cov": st.trace,
        "log_normaliser": st.log_z,
    }


class DataArrays(NamedTuple):
    """A data set prepared for streaming (see :func:`prepare_data`)."""

    pts: Array  # (N, D + 1): [y, ||y||^2], y = x1 - mean
    aug_t: Array  # (D + 2, N): [y, ||y||^2, log q] transposed
    log_q: Array  # (N,): log of the normalised weights (-inf for a zero weight)
    mean: Array  # (D,): the weighted mean
    y_max: Array  # (): the largest ||y||
    lq_max: Array  # (): the largest -log q of a point of positive weight


def prepare_data(xp: Any, flat: Array, weights: Array | None = None) -> DataArrays:
    """Centre (N, D) data at their weighted mean and augment them for :func:`block_partial`.

    ``weights`` (N,) non-negative, not all zero (unchecked here), normalised to sum to
    one (scaled by the largest first, so the sum cannot overflow); default uniform.
    """
    n = int(flat.shape[0])
    if weights is None:
        q = xp.full((n,), 1.0 / n, dtype=flat.dtype, device=_xp.device(flat))
    else:
        scaled = weights / xp.max(weights)
        q = scaled / xp.sum(scaled)
    mean = xp.sum(q[:, None] * flat, axis=0)
    centred = flat - mean
    norms = xp.sum(centred * centred, axis=1)
    # log 0 = -inf for zero weights, without a divide-by-zero warning
    positive = q > 0
    log_q = xp.where(positive, xp.log(xp.where(positive, q, xp.ones_like(q))), -math.inf)
    pts = xp.concat([centred, norms[:, None]], axis=1)
    aug_t = xp.matrix_transpose(xp.concat([pts, log_q[:, None]], axis=1))
    if array_api_compat.is_numpy_array(aug_t):
        aug_t = np.ascontiguousarray(aug_t)
    return DataArrays(
        pts,
        aug_t,
        log_q,
        mean,
        xp.sqrt(xp.max(norms)),
        xp.max(xp.where(positive, -log_q, xp.zeros_like(log_q))),
    )


class EmpiricalMarginal:
    r"""The exact marginal path :math:`p_t` and field :math:`u_t` of a data set (eq. 6, 8).

    Parameters
    ----------
    path : GaussianPath
        The conditional path :math:`\mathcal N(\alpha_t x_1, \sigma_t^2 I)`.
    data : array, shape (N, *event)
        The data points :math:`x_1^{(i)}`, batch-first, real floating.
    weights : array, shape (N,), optional
        Non-negative, not all zero, in ``data``'s namespace and dtype; normalised to sum
        to one. Host (NumPy) weights are checked; device weights are used as given.
        Default: uniform.
    chunk_size : int, optional
        Data points per streamed block. Default ``max(1, 2**22 // B)`` for a batch of B
        queries, i.e. about 4M (query, point) pairs per block.

    Notes
    -----
    Every method takes ``x`` of shape (B, *event) in ``data``'s namespace and dtype and
    ``t`` as a number, a 0-d array or of shape (B,) or (B, 1, ..., 1). The methods are
    defined where :math:`\sigma_t > 0` (``path.schedule.degenerate_at`` lists where it
    is not) and the schedule's derivatives are finite; elsewhere they return what the
    arithmetic gives.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> data = np.array([[-1.0, 0.0], [1.0, 0.0]])
    >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT(sigma_min=0.01)), data)
    >>> x = np.array([[0.9, 0.0]])
    >>> m.posterior(x, 0.9).round(3).tolist()
    [[0.0, 1.0]]
    >>> m.denoise(x, 0.9).round(3).tolist()
    [[1.0, 0.0]]
    """

    __slots__ = (
        "_aug_t",
        "_chunk",
        "_dtype",
        "_event",
        "_log_q",
        "_lq_max",
        "_mean",
        "_n",
        "_pts",
        "_size",
        "_xp",
        "_y_max",
        "path",
    )

    def __init__(
        self,
        path: GaussianPath,
        data: Array,
        weights: Array | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if not isinstance(path, GaussianPath):
            raise TypeError(
                f"`path` must be a flowspec GaussianPath (e.g. fs.GaussianPath(fs.CondOT())), "
                f"got {_xp.describe(path)}"
            )
        xp = _xp.namespace(data=data, weights=weights)
        weights_is_array = array_api_compat.is_array_api_obj(weights)  # (no type narrowing)
        if weights is not None and not weights_is_array:
            raise TypeError(f"`weights` must be an array or None, got {_xp.describe(weights)}")
        _xp.check_float(xp, "data", data)
        if data.ndim < 2:
            raise ValueError(
                f"`data` must be batch-first with shape (N, *event) and at least one event "
                f"axis, got shape {tuple(data.shape)}"
            )
        n = int(data.shape[0])
        if n < 1:
            raise ValueError("`data` must hold at least one point, got N = 0")
        if chunk_size is not None and (
            isinstance(chunk_size, bool)
            or not isinstance(chunk_size, numbers.Integral)
            or chunk_size < 1
        ):
            raise ValueError(
                f"`chunk_size` must be None or an integer >= 1, got {_xp.describe(chunk_size)}"
            )
        size = _xp.event_size(data)
        flat = xp.reshape(data, (n, size))
        if weights is not None:
            _xp.check_float(xp, "weights", weights, like=("data", data))
            if tuple(weights.shape) != (n,):
                raise ValueError(
                    f"`weights` must have shape (N,) = {(n,)} to match `data` of shape "
                    f"{tuple(data.shape)}, got shape {tuple(weights.shape)}"
                )
            if array_api_compat.is_numpy_array(weights):
                w = np.asarray(weights)
                if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
                    raise ValueError(
                        f"`weights` must be finite, non-negative and not all zero, got {w!r}"
                    )
        arrays = prepare_data(xp, flat, weights)
        # the sizes entering the streamed error bound E (see the module docstring)
        self._y_max = arrays.y_max
        self._lq_max = arrays.lq_max
        self._xp = xp
        # [x1 - mean, ||x1 - mean||^2] for the weighted sums, and the augmented data
        # [x1 - mean, ||x1 - mean||^2, log q] transposed, (D + 2, N), for the logits
        self._pts = arrays.pts
        self._aug_t = arrays.aug_t
        log_q, mean = arrays.log_q, arrays.mean
        self._log_q = log_q
        self._mean = mean
        self._n = n
        self._size = size
        self._event = tuple(int(s) for s in data.shape[1:])
        self._dtype = data.dtype
        self._chunk = None if chunk_size is None else int(chunk_size)
        self.path = path

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "path"):
            raise AttributeError("EmpiricalMarginal is immutable")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"EmpiricalMarginal(path={self.path!r}, N={self._n}, event={self._event}, "
            f"dtype={self._dtype})"
        )

    @property
    def data(self) -> Array:
        """The data points, shape (N, *event) (reconstructed from the centred copy)."""
        flat = self._pts[:, : self._size] + self._mean
        return self._xp.reshape(flat, (self._n, *self._event))

    # -- validation and the streamed posterior statistics ------------------------------
    def _prepare(self, x: Array, t: Any) -> tuple[Any, Array, Array, Any]:
        xp = _xp.namespace(x=x, t=t)
        if xp is not self._xp:
            raise TypeError(
                f"`x` and `data` must come from one library: `x` is {_xp.describe(x)} but "
                f"`data` is a {type(self._pts).__module__.split('.')[0]} array"
            )
        flat, tt, c = query_inputs(xp, self.path, x, t, self._dtype, self._event)
        return xp, flat, tt, c

    def _chunk_size(self, batch: int) -> int:
        chunk = self._chunk if self._chunk is not None else max(1, BLOCK_ELEMENTS // batch)
        return min(chunk, self._n)

    def _rows(self, xp: Any, flat: Array, alpha: Array, sigma: Array) -> Rows:
        """The per-row constants: centred query, augmented query and exact band width."""
        return query_rows(xp, flat, alpha, sigma, self._mean, self._y_max, self._lq_max)

    def _blocks(self, batch: int) -> list[tuple[Array, Array, Array]]:
        """The data in streamed blocks: (points and norms, augmented transposed, log q)."""
        chunk = self._chunk_size(batch)
        bounds = [(start, min(start + chunk, self._n)) for start in range(0, self._n, chunk)]
        return [(self._pts[a:b, :], self._aug_t[:, a:b], self._log_q[a:b]) for a, b in bounds]

    def _stats(self, x: Array, t: Any) -> tuple[Any, Any, Rows, Partial, PosteriorStats]:
        """Stream over the data; return the posterior statistics of every query row."""
        xp, flat, _, c = self._prepare(x, t)
        batch = int(flat.shape[0])
        alpha = xp.reshape(c.alpha, (batch,))
        sigma = xp.reshape(c.sigma, (batch,))
        rows = self._rows(xp, flat, alpha, sigma)
        part = None
        offset = 0
        for block in self._blocks(batch):
            new = block_partial(xp, rows, *block, offset=offset)
            offset += int(block[0].shape[0])
            part = new if part is None else merge_partials(xp, rows, part, new)
        assert part is not None  # N >= 1
        return xp, c, rows, part, finish(xp, rows, part)

    def _read(self, name: str, x: Array, t: Any) -> Array:
        xp, c, rows, _, st = self._stats(x, t)
        out = readout(xp, name, rows, st, c, self._mean)
        return out if out.ndim == 1 else xp.reshape(out, tuple(x.shape))

    # -- public methods ----------------------------------------------------------------
    def log_prob(self, x: Array, t: Array | float) -> Array:
        r"""The marginal log-density :math:`\log p_t(x)` of eq. 6, shape (B,).

        .. math::
            \log p_t(x) = \operatorname{logsumexp}_i \ell_i - d \log\sigma_t
            - \tfrac d2 \log 2\pi,

        with :math:`\ell_i` the log-weights and d the number of event entries.

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), np.zeros((3, 1)))
        >>> bool(np.isclose(m.log_prob(np.zeros((1, 1)), 0.0)[0], -0.5 * np.log(2 * np.pi)))
        True
        """
        return self._read("log_prob", x, t)

    def denoise(self, x: Array, t: Array | float) -> Array:
        r"""The posterior mean :math:`\hat x_1 = E[x_1 \mid x_t = x] = \sum_i w_i x_1^{(i)}` (weights of eq. 8).

        The x1-prediction of the exact marginal; shape (B, *event).

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), np.array([[-1.0], [1.0]]))
        >>> m.denoise(np.array([[0.0]]), 0.5).tolist()
        [[0.0]]
        """
        return self._read("denoise", x, t)

    def velocity(self, x: Array, t: Array | float) -> Array:
        r"""The marginal vector field :math:`u_t(x)` of eq. 8, shape (B, *event).

        .. math::
            u_t(x) = \frac{\dot\sigma_t}{\sigma_t}(x - \alpha_t \hat x_1) + \dot\alpha_t \hat x_1
                   = \frac{\dot\sigma_t}{\sigma_t} x
                     + \Big(\dot\alpha_t - \alpha_t \frac{\dot\sigma_t}{\sigma_t}\Big)\hat x_1,

        evaluated in the first form (the residual :math:`x - \alpha_t \hat x_1` is formed
        directly, so it does not cancel where sigma is small).

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), np.array([[2.0]]))
        >>> m.velocity(np.array([[0.5]]), 0.5).tolist()  # one point: (x1 - x) / (1 - t)
        [[3.0]]
        """
        return self._read("velocity", x, t)

    def score(self, x: Array, t: Array | float) -> Array:
        r"""The marginal score :math:`\nabla_x \log p_t(x) = -(x - \alpha_t \hat x_1)/\sigma_t^2` of eq. 6.

        Shape (B, *event).

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), np.zeros((2, 1)))
        >>> m.score(np.array([[2.0]]), 0.0).tolist()
        [[-2.0]]
        """
        return self._read("score", x, t)

    def divergence(self, x: Array, t: Array | float) -> Array:
        r"""The divergence :math:`\nabla\cdot u_t(x)` of the marginal field (eq. 8) in closed form, shape (B,).

        .. math::
            \nabla\cdot u_t(x) = d\,\frac{\dot\sigma_t}{\sigma_t}
            + \Big(\dot\alpha_t - \alpha_t\frac{\dot\sigma_t}{\sigma_t}\Big)
              \frac{\alpha_t}{\sigma_t^2}\, \operatorname{tr}\operatorname{Cov}_w[x_1],

        where :math:`\operatorname{tr}\operatorname{Cov}_w[x_1] = \sum_i w_i \lVert
        x_1^{(i)} - \hat x_1\rVert^2` is the trace of the posterior covariance of the data
        points (derivation in ``docs/marginal.md``).

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), np.zeros((1, 3)))
        >>> m.divergence(np.ones((1, 3)), 0.5).tolist()  # one point: d * d_sigma / sigma
        [-6.0]
        """
        return self._read("divergence", x, t)

    def posterior_summary(self, x: Array, t: Array | float) -> dict[str, Array]:
        r"""Summaries of the posterior over the data points (weights of eq. 8), each (B,).

        ``"max_weight"``: the posterior weight of the most probable data point;
        ``"top"``: its index into ``data`` (integer; the smallest among exact ties, e.g.
        duplicated points); ``"trace_cov"``: the trace of the posterior covariance of
        the data points, :math:`\sum_i w_i \lVert x_1^{(i)} - \hat x_1\rVert^2`;
        ``"log_normaliser"``: :math:`\log\sum_i e^{\ell_i}`.

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), np.array([[-1.0], [1.0]]))
        >>> s = m.posterior_summary(np.array([[0.9]]), 0.9)
        >>> int(s["top"][0]), bool(s["max_weight"][0] > 0.99)
        (1, True)
        """
        *_, st = self._stats(x, t)
        return summary(st)

    def posterior(self, x: Array, t: Array | float) -> Array:
        r"""The posterior weights :math:`w_i = q_i\, p_t(x \mid x_1^{(i)}) / p_t(x)` of eq. 8, shape (B, N).

        Each row sums to one. This materialises a (B, N) array; the other methods never do.

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), np.array([[-1.0], [1.0]]))
        >>> m.posterior(np.array([[0.0]]), 0.5).tolist()
        [[0.5, 0.5]]
        """
        xp, _, rows, part, _ = self._stats(x, t)
        batch = int(x.shape[0])
        d = self._size
        blocks = []
        for block in self._blocks(batch):
            rel, a = block_posterior_log_weights(xp, rows, *block)
            # this block's anchor relative to the row's anchor, in difference form
            y_a = xp.take(block[0], a, axis=0)[:, :d]
            gap = log_weight_gap(
                xp, rows, part.anchor, part.log_q, y_a, xp.take(block[2], a, axis=0)
            )
            blocks.append(xp.exp(rel + gap[:, None]))
        w = xp.concat(blocks, axis=1) if len(blocks) > 1 else blocks[0]
        # each row normalised by its own sum: rows sum to one within a few ulp times N
        return w / xp.sum(w, axis=1, keepdims=True)

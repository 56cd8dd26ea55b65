r"""The exact marginal (eq. 6, 8) as a static-shape reduction, for the fused backend kernels.

The posterior of the exact marginal is a softmax over the data points, so every
quantity of :class:`~flowspec.EmpiricalMarginal` is a function of a few sums over the
data, and those sums reduce chunk by chunk with the online log-sum-exp.
:class:`~flowspec.EmpiricalMarginal` and :class:`flowspec.distributed.DaskMarginal`
reduce with the partials of :mod:`flowspec.marginal` (an exact band of recomputed
points below each block's maximum, whose width depends on the data, so its shapes do
too). The fused kernels of the torch and JAX backends (``marginal``,
``sharded_marginal``), which must trace one block with fixed shapes under ``jax.jit``
or run in place, use this variant instead: the same online log-sum-exp with the
cancellation guard on the arg-max point only (recomputed exactly, the posterior mean and
covariance formed relative to it). They are tested against the NumPy reference core.
:func:`readout` (the quantities from the posterior statistics) serves both.

The data are centred at their weighted mean :math:`\mu` and augmented once:
:math:`y_i = x_1^{(i)} - \mu`, a row ``[y_i, ||y_i||^2, log q_i]``. A query batch ``x``
at times ``t`` becomes one augmented query row (:func:`query`), so that the streamed
logits of a chunk are one matrix product,

.. math::
    g_i = \ell_i + \frac{\lVert x - \alpha_t\mu\rVert^2}{2\sigma_t^2}
        = \frac{\alpha_t}{\sigma_t^2}(x - \alpha_t\mu)\cdot y_i
          - \frac{\alpha_t^2}{2\sigma_t^2}\lVert y_i\rVert^2 + \log q_i ,

with :math:`\ell_i` the log-weights of eq. 8. A :class:`Partial` of a chunk holds, per
query row, the chunk's largest logit ``m``, the normaliser
:math:`s = \sum_i e^{g_i - m}`, the weighted sums :math:`\sum_i e^{g_i - m}[y_i,
\lVert y_i\rVert^2]`, and the index and augmented row of the arg-max point.
:func:`merge` combines two partials exactly (rescaling the smaller side by
:math:`e^{m_a - m}`); it is associative and commutative (ties of the maximum go to
the smaller index), so any tree of merges gives the same statistics up to rounding.
:func:`finish` turns the merged partial into the posterior statistics, with the
float32 cancellation guard: the dominant point's log-weight is recomputed exactly by
direct subtraction, and the posterior mean and covariance trace are formed relative to
it (see :mod:`flowspec.marginal`). Work and memory per chunk: two matrix products of
(B, D + 2) x (D + 2, n) and (B, n) x (n, D + 1), and a (B, n) block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from . import validation as _xp
from .typing import Array

__all__ = [
    "Partial",
    "PosteriorStats",
    "augment",
    "chunk_partial",
    "finish",
    "merge",
    "merge_all",
    "query",
    "readout",
]


#: Default number of (query, data point) pairs per block: 4M (16 MiB in float32).
BLOCK_ELEMENTS = 1 << 22

#: The quantities :func:`readout` can form from the posterior statistics.
QUANTITIES = ("log_prob", "denoise", "velocity", "score", "divergence")


class Partial(NamedTuple):
    """Online log-sum-exp statistics of a chunk of data points, per query row.

    Attributes
    ----------
    m : array, shape (B,)
        The largest streamed logit :math:`g_i` of the chunk (at least ``-finfo.max``).
    s : array, shape (B,)
        :math:`\\sum_i e^{g_i - m}`.
    sums : array, shape (B, D + 1)
        :math:`\\sum_i e^{g_i - m}\\,[y_i, \\lVert y_i\\rVert^2]`.
    k : array, shape (B,), integer
        Global index of the arg-max point (the smallest one where tied).
    row : array, shape (B, D + 2)
        The augmented row ``[y_k, ||y_k||^2, log q_k]`` of the arg-max point, so that
        the cancellation guard needs no second pass over the data.
    """

    m: Array
    s: Array
    sums: Array
    k: Array
    row: Array


class PosteriorStats(NamedTuple):
    """Posterior statistics of a query batch (all per query row).

    Attributes
    ----------
    log_z : (B,) log of the normaliser of the log-weights, :math:`\\log\\sum_i e^{\\ell_i}`.
    y_hat : (B, D) centred posterior mean :math:`\\hat x_1 - \\mu`.
    trace : (B,) trace of the posterior covariance of the data points, >= 0.
    k : (B,) index of the most probable data point.
    w_k : (B,) its posterior weight.
    w_rest : (B,) the factor turning :math:`e^{g_i - m}` into the weight of any other point.
    m : (B,) the largest streamed logit.
    """

    log_z: Array
    y_hat: Array
    trace: Array
    k: Array
    w_k: Array
    w_rest: Array
    m: Array


def augment(xp: Any, flat: Array, log_q: Array, mean: Array) -> Array:
    """The augmented data rows ``[x1 - mean, ||x1 - mean||^2, log q]``, shape (n, D + 2).

    ``flat`` is (n, D), ``log_q`` (n,) the log of the normalised weights, ``mean`` (D,)
    the weighted mean of the whole data set (so chunks of one data set share it).
    """
    centred = flat - mean
    norms = xp.sum(centred * centred, axis=1)
    return xp.concat([centred, norms[:, None], log_q[:, None]], axis=1)


def query(
    xp: Any, flat: Array, alpha: Array, sigma: Array, mean: Array
) -> tuple[Array, Array, Array]:
    r"""Centred queries ``x - alpha mean``, their squared norms and the augmented query rows.

    ``flat`` (B, D), ``alpha`` and ``sigma`` (B,), ``mean`` (D,). The augmented row is
    ``[(x - alpha mean) alpha / sigma^2, -alpha^2 / (2 sigma^2), 1]``, shape (B, D + 2).
    """
    xc = flat - alpha[:, None] * mean
    sq = xp.sum(xc * xc, axis=1)
    inv = 1.0 / (sigma * sigma)
    ones = xp.ones_like(alpha)
    q = xp.concat(
        [xc * (alpha * inv)[:, None], (-0.5 * alpha * alpha * inv)[:, None], ones[:, None]],
        axis=1,
    )
    return xc, sq, q


def chunk_partial(
    xp: Any,
    q: Array,
    aug_t: Array,
    pts: Array,
    offset: Any,
    *,
    index_dtype: Any = None,
    shifted_exp: Callable[[Array, Array], Array] | None = None,
) -> Partial:
    """The :class:`Partial` of one chunk of augmented data against the augmented queries.

    Parameters
    ----------
    q : (B, D + 2) augmented queries (:func:`query`).
    aug_t : (D + 2, n) the chunk's augmented rows (:func:`augment`), transposed.
    pts : (n, D + 1) the chunk's ``[y, ||y||^2]`` (the first D + 1 columns of the rows).
    offset : global index of the chunk's first point.
    index_dtype : dtype of ``k``; default the namespace's default integer dtype.
    shifted_exp : optional ``f(g, m) -> exp(g - m[:, None])``, a backend's fused
        elementwise kernel (it may overwrite ``g``, a temporary of this function).
    """
    batch = int(q.shape[0])
    dtype = q.dtype
    g = xp.matmul(q, aug_t)
    # the floor -finfo.max keeps a chunk of zero-weight points (all g = -inf) finite
    floor = xp.full((batch,), -xp.finfo(dtype).max, dtype=dtype, device=_xp.device(q))
    m = xp.maximum(xp.max(g, axis=1), floor)
    arg = xp.argmax(g, axis=1)
    e = xp.exp(g - m[:, None]) if shifted_exp is None else shifted_exp(g, m)
    del g
    s = xp.sum(e, axis=1)
    sums = xp.matmul(e, pts)
    del e
    row = xp.matrix_transpose(xp.take(aug_t, arg, axis=1))
    k = arg + offset if index_dtype is None else xp.astype(arg, index_dtype) + offset
    return Partial(m, s, sums, k, row)


def merge(xp: Any, a: Partial, b: Partial) -> Partial:
    """Merge two partials of disjoint chunks: associative, commutative, exact up to rounding."""
    m = xp.maximum(a.m, b.m)
    take_b = (b.m > a.m) | ((b.m == a.m) & (b.k < a.k))
    s = xp.exp(a.m - m) * a.s + xp.exp(b.m - m) * b.s
    sums = xp.exp(a.m - m)[:, None] * a.sums + xp.exp(b.m - m)[:, None] * b.sums
    k = xp.where(take_b, b.k, a.k)
    row = xp.where(take_b[:, None], b.row, a.row)
    return Partial(m, s, sums, k, row)


def merge_all(xp: Any, partials: list[Partial] | tuple[Partial, ...]) -> Partial:
    """Merge a non-empty sequence of partials pairwise, as a balanced tree."""
    items = list(partials)
    if not items:
        raise ValueError("`partials` must hold at least one Partial")
    while len(items) > 1:
        pairs = [merge(xp, items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        items = pairs + ([items[-1]] if len(items) % 2 else [])
    return items[0]


def finish(xp: Any, p: Partial, xc: Array, sq: Array, alpha: Array, sigma: Array) -> PosteriorStats:
    r"""Posterior statistics of the merged partial of *all* data, with the cancellation guard.

    The arg-max point k is recomputed exactly: :math:`\ell_k = \log q_k - \lVert x -
    \alpha_t x_1^{(k)}\rVert^2 / (2\sigma_t^2)` by direct subtraction (a sum of squares,
    so >= 0 without a clamp) replaces its streamed log-weight; its streamed contribution
    to ``s`` is exactly 1 relative to ``m``, so the swap is exact. The posterior mean and
    the covariance trace are formed relative to :math:`y_k` from the sums over the other
    points, so the one-hot limit is exact (trace exactly 0).
    """
    d = int(xc.shape[1])
    y_k, n_k, log_q_k = p.row[:, :d], p.row[:, d], p.row[:, d + 1]
    r_k = xc - alpha[:, None] * y_k
    inv2 = 0.5 / (sigma * sigma)
    l_k = log_q_k - xp.sum(r_k * r_k, axis=1) * inv2
    l_max = p.m - sq * inv2  # streamed log-weight of k (= the maximum)
    rest = p.s - 1.0  # the other points' sum of exp(l_i - l_max); k contributed exactly 1
    has_rest = rest > 0.0
    log_rest = xp.where(
        has_rest, l_max + xp.log(xp.where(has_rest, rest, xp.ones_like(rest))), -math.inf
    )
    log_z = xp.logaddexp(l_k, log_rest)
    w_k = xp.exp(l_k - log_z)
    # exp(l_max - log_z) <= 1 / rest; masked before the exp so no overflow is computed
    gap = xp.where(has_rest, l_max - log_z, xp.zeros_like(rest))
    w_rest = xp.where(has_rest, xp.exp(gap), xp.zeros_like(rest))
    s1_rest = p.sums[:, :d] - y_k
    a = s1_rest - rest[:, None] * y_k  # sum over the others of e (y_i - y_k)
    c_rest = (p.sums[:, d] - n_k) - 2.0 * xp.sum(y_k * s1_rest, axis=1) + rest * n_k
    shift = w_rest[:, None] * a  # posterior mean - y_k
    trace = w_rest * c_rest - xp.sum(shift * shift, axis=1)
    trace = xp.maximum(trace, xp.zeros_like(trace))
    return PosteriorStats(log_z, y_k + shift, trace, p.k, w_k, w_rest, p.m)


def readout(xp: Any, name: str, st: Any, c: Any, xc: Array, mean: Array) -> Array:
    r"""One quantity of the exact marginal from the posterior statistics, flat.

    ``name`` is one of :data:`QUANTITIES`; ``c`` the schedule's coefficients at the
    query times (each field shape (B, 1, ..., 1) or (B,)), ``xc`` the centred queries
    (B, D), ``mean`` the data mean (D,). Returns (B,) for ``log_prob`` and
    ``divergence``, (B, D) otherwise:

    * ``log_prob``: :math:`\log p_t(x) = \log Z - D\log\sigma_t - \tfrac D2\log 2\pi` (eq. 6);
    * ``denoise``: :math:`\hat x_1 = \sum_i w_i x_1^{(i)}`;
    * ``velocity``: :math:`u_t(x) = \tfrac{\dot\sigma_t}{\sigma_t}(x - \alpha_t\hat x_1)
      + \dot\alpha_t\hat x_1` (eq. 8), with the residual formed directly;
    * ``score``: :math:`-(x - \alpha_t\hat x_1)/\sigma_t^2`;
    * ``divergence``: :math:`D\tfrac{\dot\sigma_t}{\sigma_t} + (\dot\alpha_t -
      \alpha_t\tfrac{\dot\sigma_t}{\sigma_t})\tfrac{\alpha_t}{\sigma_t^2}
      \operatorname{tr}\operatorname{Cov}_w[x_1]`.
    """
    batch, d = int(xc.shape[0]), int(xc.shape[1])
    alpha, sigma, d_alpha, d_sigma = (xp.reshape(v, (batch,)) for v in c)
    if name == "log_prob":
        return st.log_z - d * xp.log(sigma) - 0.5 * d * math.log(2.0 * math.pi)
    if name == "denoise":
        return st.y_hat + mean
    ratio = d_sigma / sigma
    if name == "divergence":
        gain = (d_alpha - alpha * ratio) * alpha / (sigma * sigma)
        return d * ratio + gain * st.trace
    resid = xc - alpha[:, None] * st.y_hat
    if name == "velocity":
        return ratio[:, None] * resid + d_alpha[:, None] * (st.y_hat + mean)
    if name == "score":
        return -resid / (sigma * sigma)[:, None]
    raise ValueError(f"`name` must be one of {QUANTITIES}, got {name!r}")

r"""The exact marginal (eq. 6, 8) of a data set held in a Dask array, reduced on a cluster.

:class:`DaskMarginal` is :class:`~flowspec.EmpiricalMarginal` for data that do not fit
one process: the data stay where Dask keeps them (the workers of a ``dask.distributed``
cluster, or a local scheduler), chunked along N. For a batch of B queries, every data
chunk reduces against the queries to a :class:`flowspec.marginal.Partial` (the chunk's
anchor point, its log-weight and the anchor-relative sums, with every point in the
exact band recomputed by direct subtraction), the partials are merged by an associative
tree reduction (:func:`flowspec.marginal.merge_partials`, ``split_every`` at a time),
and the merged partial is finished on a worker (:func:`flowspec.marginal.finish`) into
the posterior statistics. These are the very functions :class:`~flowspec.EmpiricalMarginal`
streams its blocks through, so the float32 guard is the same. The client sends the
per-row constants (:func:`flowspec.marginal.query_rows`, one (B, D + 2)-sized object per
worker) and receives (B, D)-sized statistics; the data never move.

Dask and distributed are an optional extra (``pip install "flowspec[dask]"``); this
module imports them only when a :class:`DaskMarginal` is built, and ``import flowspec``
never imports it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import marginal as _m
from . import validation as _xp
from .paths import GaussianPath
from .typing import Array

__all__ = ["DaskMarginal"]


def _dask() -> tuple[Any, Any]:
    try:
        return importlib.import_module("dask"), importlib.import_module("dask.array")
    except ImportError as err:  # pragma: no cover - exercised where dask is absent
        raise ImportError('flowspec.distributed needs dask: pip install "flowspec[dask]"') from err


def _chunk_arrays(
    block: np.ndarray, weights: np.ndarray | None, log_total: float, mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chunk's ``[y, ||y||^2]`` (n, D + 1), augmented rows transposed (D + 2, n), log q."""
    n = int(block.shape[0])
    flat = np.reshape(block, (n, -1))
    if weights is None:
        log_q = np.full((n,), -log_total, dtype=flat.dtype)
    else:
        with np.errstate(divide="ignore"):  # log 0 = -inf: a zero-weight point
            log_q = (np.log(weights) - log_total).astype(flat.dtype)
    centred = flat - mean
    pts = np.concatenate([centred, np.sum(centred * centred, axis=1)[:, None]], axis=1)
    aug_t = np.ascontiguousarray(np.concatenate([pts, log_q[:, None]], axis=1).T)
    return pts, aug_t, log_q


def _chunk_task(
    block: np.ndarray,
    weights: np.ndarray | None,
    log_total: float,
    mean: np.ndarray,
    rows: _m.Rows,
    block_size: int,
    offset: int,
) -> _m.Partial:
    """The partial of one data chunk (its first point at ``offset``), in blocks of ``block_size``."""
    pts, aug_t, log_q = _chunk_arrays(block, weights, log_total, mean)
    partial = None
    for start in range(0, int(pts.shape[0]), block_size):
        sl = slice(start, start + block_size)
        part = _m.block_partial(np, rows, pts[sl], aug_t[:, sl], log_q[sl], offset=offset + start)
        partial = part if partial is None else _m.merge_partials(np, rows, partial, part)
    assert partial is not None
    return partial


def _merge_task(rows: _m.Rows, partials: Sequence[_m.Partial]) -> _m.Partial:
    return _m.merge_all(np, rows, partials)


def _finish_task(rows: _m.Rows, part: _m.Partial) -> _m.PosteriorStats:
    return _m.finish(np, rows, part)


def _posterior_block(
    block: np.ndarray,
    weights: np.ndarray | None,
    log_total: float,
    mean: np.ndarray,
    rows: _m.Rows,
    part: _m.Partial,
    block_size: int,
) -> np.ndarray:
    """The posterior weights of one chunk's points, (B, n), relative to the global anchor."""
    pts, aug_t, log_q = _chunk_arrays(block, weights, log_total, mean)
    d = int(pts.shape[1]) - 1
    out = []
    for start in range(0, int(pts.shape[0]), block_size):
        sl = slice(start, start + block_size)
        rel, a = _m.block_posterior_log_weights(np, rows, pts[sl], aug_t[:, sl], log_q[sl])
        y_a = np.take(pts[sl], a, axis=0)[:, :d]
        gap = _m.log_weight_gap(np, rows, part.anchor, part.log_q, y_a, np.take(log_q[sl], a))
        out.append(np.exp(rel + gap[:, None]) / (1.0 + part.mass)[:, None])
    return np.concatenate(out, axis=1)


class DaskMarginal:
    r"""The exact marginal path and field (eq. 6, 8) of data held in a Dask array.

    Parameters
    ----------
    path : GaussianPath
        The conditional path :math:`\mathcal N(\alpha_t x_1, \sigma_t^2 I)`.
    data : dask.array.Array, shape (N, *event)
        The data points, real floating, NumPy-backed chunks, chunked along N (the event
        axes are rechunked to one chunk; persist the array on the cluster first so that
        its chunks stay in the workers' memory).
    weights : dask.array.Array or numpy.ndarray, shape (N,), optional
        Non-negative, finite, not all zero (checked on the cluster); normalised to sum to
        one. Default: uniform.
    block_size : int, optional
        Points per streamed block inside a chunk; default ``max(1, 2**22 // B)``, so a
        task holds a few (B, block_size) blocks besides its chunk.
    split_every : int, optional
        Partials merged per task of the tree reduction (default 8, at least 2).

    Notes
    -----
    The methods take NumPy queries ``x`` of shape (B, *event) and ``data``'s dtype and
    ``t`` as for :class:`~flowspec.EmpiricalMarginal`, run one graph on Dask's current
    scheduler (the active ``distributed.Client``, if any) and return NumPy arrays. The
    result equals :class:`~flowspec.EmpiricalMarginal` on the same data up to the
    rounding of a different summation order: a relative error of a few
    ``finfo(dtype).eps`` times the conditioning of the softmax (the size of the
    log-weights), as for the single-process stream.

    Examples
    --------
    >>> import numpy as np, dask.array as da, flowspec as fs
    >>> from flowspec.distributed import DaskMarginal
    >>> data = da.from_array(np.array([[-1.0], [1.0], [3.0]]), chunks=(2, 1))
    >>> path = fs.GaussianPath(fs.CondOT())
    >>> m = DaskMarginal(path, data)
    >>> x = np.array([[0.0], [1.0]])
    >>> m.denoise(x, 0.5).round(4).tolist()
    [[0.0272], [1.9728]]
    >>> single = fs.EmpiricalMarginal(path, data.compute())
    >>> bool(np.allclose(m.velocity(x, 0.5), single.velocity(x, 0.5), rtol=1e-12))
    True
    """

    __slots__ = (
        "_block",
        "_blocks",
        "_d",
        "_dtype",
        "_event",
        "_log_total",
        "_lq_max",
        "_mean",
        "_n",
        "_offsets",
        "_split",
        "_weights",
        "_y_max",
        "path",
    )

    path: GaussianPath
    _blocks: list[Any]
    _weights: list[Any]
    _offsets: list[int]
    _mean: np.ndarray
    _log_total: float
    _y_max: np.ndarray
    _lq_max: np.ndarray
    _n: int
    _d: int
    _event: tuple[int, ...]
    _dtype: np.dtype[Any]
    _block: int | None
    _split: int

    def __init__(
        self,
        path: GaussianPath,
        data: Any,
        weights: Any | None = None,
        *,
        block_size: int | None = None,
        split_every: int = 8,
    ) -> None:
        dask, da = _dask()
        if not isinstance(path, GaussianPath):
            raise TypeError(
                f"`path` must be a flowspec GaussianPath (e.g. fs.GaussianPath(fs.CondOT())), "
                f"got {_xp.describe(path)}"
            )
        if not isinstance(data, da.Array):
            raise TypeError(f"`data` must be a dask array, got {_xp.describe(data)}")
        if data.ndim < 2:
            raise ValueError(
                f"`data` must be batch-first with shape (N, *event) and at least one event "
                f"axis, got shape {tuple(data.shape)}"
            )
        if math.isnan(data.shape[0]) or any(math.isnan(s) for s in data.shape):
            raise ValueError(f"`data` must have a known shape, got {tuple(data.shape)}")
        dtype = np.dtype(data.dtype)
        if dtype.kind != "f":
            raise TypeError(f"`data` must have a real floating dtype, got {dtype}")
        n = int(data.shape[0])
        if n < 1:
            raise ValueError("`data` must hold at least one point, got N = 0")
        for name, value, low in (("block_size", block_size, 1), ("split_every", split_every, 2)):
            if value is None and name == "block_size":
                continue
            _xp.integer(name, value, low)
        event = tuple(int(s) for s in data.shape[1:])
        d = math.prod(event)
        # the event axes in one chunk, so that flattening them keeps the chunks along N
        # (reshape's merge_chunks=False would split N into chunks of one point)
        flat = data.rechunk({i: -1 for i in range(1, data.ndim)}).reshape((n, d))
        if weights is None:
            mean = flat.mean(axis=0, dtype=dtype)
            (mean_np,) = dask.compute(mean)
            log_total = math.log(n)
            lq_max = math.log(n)
            wblocks: list[Any] = [None] * flat.numblocks[0]
        else:
            if isinstance(weights, np.ndarray):
                weights = da.from_array(weights, chunks=(flat.chunks[0],))
            if not isinstance(weights, da.Array):
                raise TypeError(
                    f"`weights` must be a dask or NumPy array or None, got {_xp.describe(weights)}"
                )
            if np.dtype(weights.dtype) != dtype:
                raise TypeError(
                    f"`weights` and `data` must share one floating dtype (no silent casts): "
                    f"`weights` is {weights.dtype} but `data` is {dtype}"
                )
            if tuple(weights.shape) != (n,):
                raise ValueError(
                    f"`weights` must have shape (N,) = {(n,)} to match `data` of shape "
                    f"{tuple(data.shape)}, got shape {tuple(weights.shape)}"
                )
            weights = weights.rechunk((flat.chunks[0],))
            total = weights.sum(dtype=dtype)
            bad = (~da.isfinite(weights) | (weights < 0)).any()
            mean = (weights[:, None] * flat).sum(axis=0, dtype=dtype) / total
            smallest = da.where(weights > 0, weights, np.inf).min()
            mean_np, total_np, bad_np, small_np = dask.compute(mean, total, bad, smallest)
            if bool(bad_np) or not float(total_np) > 0:
                raise ValueError("`weights` must be finite, non-negative and not all zero")
            log_total = math.log(float(total_np))
            lq_max = log_total - math.log(float(small_np))  # the largest -log q_i, q_i > 0
            wblocks = list(weights.to_delayed().ravel())
        centred = flat - np.asarray(mean_np, dtype=dtype)
        (y_max2,) = dask.compute(da.max(da.sum(centred * centred, axis=1)))
        object.__setattr__(self, "_y_max", np.sqrt(np.asarray(y_max2, dtype=dtype)))
        object.__setattr__(self, "_lq_max", np.asarray(lq_max, dtype=dtype))
        object.__setattr__(self, "_blocks", list(flat.to_delayed().ravel()))
        object.__setattr__(self, "_weights", wblocks)
        offsets = np.concatenate([[0], np.cumsum(flat.chunks[0])[:-1]]).astype(int)
        object.__setattr__(self, "_offsets", [int(o) for o in offsets])
        object.__setattr__(self, "_mean", np.asarray(mean_np, dtype=dtype))
        object.__setattr__(self, "_log_total", log_total)
        object.__setattr__(self, "_n", n)
        object.__setattr__(self, "_d", d)
        object.__setattr__(self, "_event", event)
        object.__setattr__(self, "_dtype", dtype)
        object.__setattr__(self, "_block", None if block_size is None else int(block_size))
        object.__setattr__(self, "_split", int(split_every))
        object.__setattr__(self, "path", path)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("DaskMarginal is immutable")

    def __repr__(self) -> str:
        return (
            f"DaskMarginal(path={self.path!r}, N={self._n}, event={self._event}, "
            f"dtype={self._dtype}, chunks={len(self._blocks)})"
        )

    @property
    def num_chunks(self) -> int:
        """The number of data chunks (tasks of the first level of the reduction)."""
        return len(self._blocks)

    # -- the graph ---------------------------------------------------------------------
    def _prepare(self, x: Any, t: Any) -> tuple[Any, _m.Rows]:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"`x` must be a NumPy array (the queries), got {_xp.describe(x)}")
        xp = _xp.namespace(x=x, t=t)
        flat, _, c = _m.query_inputs(xp, self.path, x, t, self._dtype, self._event)
        batch = int(x.shape[0])
        alpha = np.reshape(c.alpha, (batch,))
        sigma = np.reshape(c.sigma, (batch,))
        rows = _m.query_rows(np, flat, alpha, sigma, self._mean, self._y_max, self._lq_max)
        return c, rows

    def _graph(self, x: Array, t: Array | float) -> tuple[Any, Any, Any, _m.Rows]:
        dask, _ = _dask()
        delayed = dask.delayed
        c, rows = self._prepare(x, t)
        batch = int(rows.xc.shape[0])
        block = self._block if self._block is not None else max(1, _m.BLOCK_ELEMENTS // batch)
        rows_key = delayed(rows, pure=True)  # one key: sent once per worker, not per task
        mean_key = delayed(self._mean, pure=True)
        level = [
            delayed(_chunk_task, pure=True)(
                blk, w, self._log_total, mean_key, rows_key, block, offset
            )
            for blk, w, offset in zip(self._blocks, self._weights, self._offsets, strict=True)
        ]
        while len(level) > 1:
            level = [
                delayed(_merge_task, pure=True)(rows_key, level[i : i + self._split])
                for i in range(0, len(level), self._split)
            ]
        return level[0], rows_key, c, rows

    def statistics_graph(self, x: Array, t: Array | float) -> tuple[Any, Any, _m.Rows]:
        """The lazy graph of the posterior statistics of the queries ``x`` at times ``t``.

        Returns ``(stats, coefficients, rows)``: ``stats`` a ``dask.delayed`` object that
        computes a :class:`flowspec.marginal.PosteriorStats` on the scheduler's workers,
        ``rows`` the per-row constants (:func:`flowspec.marginal.query_rows`) that
        :meth:`readout` needs. Computing ``stats`` (``dask.compute``, ``client.compute``)
        moves only (B, D)-sized arrays to the client.
        """
        dask, _ = _dask()
        part, rows_key, c, rows = self._graph(x, t)
        stats = dask.delayed(_finish_task, pure=True)(rows_key, part)
        return stats, c, rows

    def _compute(self, name: str, x: Array, t: Array | float) -> np.ndarray:
        return self.evaluate(x, t, (name,))[name]

    def evaluate(
        self, x: Array, t: Array | float, quantities: Sequence[str] = _m.QUANTITIES
    ) -> dict[str, np.ndarray]:
        """Several quantities from one reduction over the data (one pass, one graph).

        ``quantities`` names any of ``"log_prob"``, ``"denoise"``, ``"velocity"``,
        ``"score"``, ``"divergence"`` (default: all); returns a dict of NumPy arrays,
        each as the method of that name returns it.
        """
        unknown = [q for q in quantities if q not in _m.QUANTITIES]
        if unknown or isinstance(quantities, str):
            raise ValueError(
                f"`quantities` must be a sequence of names from {_m.QUANTITIES}, got {quantities!r}"
            )
        dask, _ = _dask()
        graph, c, rows = self.statistics_graph(x, t)
        (st,) = dask.compute(graph)
        return {name: self.readout(name, st, c, rows, tuple(x.shape)) for name in quantities}

    def readout(
        self, name: str, st: _m.PosteriorStats, c: Any, rows: _m.Rows, shape: tuple[int, ...]
    ) -> np.ndarray:
        """One quantity (``"log_prob"``, ``"denoise"``, ``"velocity"``, ``"score"``,
        ``"divergence"``) from computed statistics (:func:`flowspec.marginal.readout`),
        shaped like the queries."""
        out = _m.readout(np, name, rows, st, c, self._mean)
        return out if out.ndim == 1 else np.reshape(out, shape)

    # -- public methods ----------------------------------------------------------------
    def log_prob(self, x: Array, t: Array | float) -> np.ndarray:
        r"""The marginal log-density :math:`\log p_t(x)` of eq. 6, shape (B,)."""
        return self._compute("log_prob", x, t)

    def denoise(self, x: Array, t: Array | float) -> np.ndarray:
        r"""The posterior mean :math:`\hat x_1 = \sum_i w_i x_1^{(i)}` (weights of eq. 8), shape (B, *event)."""
        return self._compute("denoise", x, t)

    def velocity(self, x: Array, t: Array | float) -> np.ndarray:
        r"""The marginal vector field :math:`u_t(x)` of eq. 8, shape (B, *event)."""
        return self._compute("velocity", x, t)

    def score(self, x: Array, t: Array | float) -> np.ndarray:
        r"""The marginal score :math:`-(x - \alpha_t \hat x_1)/\sigma_t^2`, shape (B, *event)."""
        return self._compute("score", x, t)

    def divergence(self, x: Array, t: Array | float) -> np.ndarray:
        r"""The divergence of the marginal field (eq. 8) in closed form, shape (B,)."""
        return self._compute("divergence", x, t)

    def posterior_summary(self, x: Array, t: Array | float) -> dict[str, np.ndarray]:
        """Summaries of the posterior over the data points, each of shape (B,).

        The same as :meth:`flowspec.EmpiricalMarginal.posterior_summary`:
        ``"max_weight"``: the posterior weight of the most probable data point;
        ``"top"``: its index into ``data`` (the smallest among exact ties);
        ``"trace_cov"``: the trace of the posterior covariance of the data points,
        :math:`\\sum_i w_i \\lVert x_1^{(i)} - \\hat x_1\\rVert^2` (eq. 8's weights);
        ``"log_normaliser"``: :math:`\\log\\sum_i e^{\\ell_i}`.
        """
        dask, _ = _dask()
        graph, _, _ = self.statistics_graph(x, t)
        (st,) = dask.compute(graph)
        return _m.summary(st)

    def posterior(self, x: Array, t: Array | float) -> Any:
        """The posterior weights of eq. 8 as a lazy dask array of shape (B, N), chunked like ``data``.

        The merged statistics are computed first (one reduction, (B, D)-sized); the
        weights themselves are formed chunk by chunk where the data live, only when
        computed. Each is relative to the most probable point, so the rows sum to one
        within the rounding of N terms.
        """
        dask, da = _dask()
        part_graph, rows_key, _, rows = self._graph(x, t)
        (part,) = dask.compute(part_graph)
        batch = int(rows.xc.shape[0])
        block = self._block if self._block is not None else max(1, _m.BLOCK_ELEMENTS // batch)
        delayed = dask.delayed
        part_key = delayed(part, pure=True)
        mean_key = delayed(self._mean, pure=True)
        sizes = np.diff([*self._offsets, self._n]).tolist()
        cols = [
            da.from_delayed(
                delayed(_posterior_block, pure=True)(
                    blk, w, self._log_total, mean_key, rows_key, part_key, block
                ),
                shape=(batch, size),
                dtype=self._dtype,
            )
            for blk, w, size in zip(self._blocks, self._weights, sizes, strict=True)
        ]
        return da.concatenate(cols, axis=1)

r"""The exact marginal path and vector field of an empirical data distribution (eq. 6 and 8).

For data :math:`q = \sum_i q_i \delta_{x_1^{(i)}}` (uniform :math:`q_i = 1/N` unless
weights are given) and a Gaussian conditional path
:math:`p_t(x \mid x_1) = \mathcal N(\alpha_t x_1, \sigma_t^2 I)`, the marginal path of
eq. 6 is a Gaussian mixture and the marginal field of eq. 8 is a posterior average:

.. math::
    p_t(x) = \sum_i q_i\, \mathcal N(x \mid \alpha_t x_1^{(i)}, \sigma_t^2 I), \qquad
    w_i(x, t) = \frac{q_i\, p_t(x \mid x_1^{(i)})}{p_t(x)}, \qquad
    \hat x_1(x, t) = \sum_i w_i\, x_1^{(i)},

.. math::
    u_t(x) = \sum_i w_i\, u_t(x \mid x_1^{(i)})
           = \frac{\dot\sigma_t}{\sigma_t}\,(x - \alpha_t \hat x_1) + \dot\alpha_t\, \hat x_1 .

The posterior weights are a softmax of the log-weights
:math:`\ell_i = -\lVert x - \alpha_t x_1^{(i)} \rVert^2 / (2\sigma_t^2) + \log q_i`.

Computation. Nothing of shape (B, N, D) is ever formed. The data are stored centred
at their (weighted) mean together with their squared norms and log-weights, so that
all log-weights of a block of data points come out of *one* matrix product of an
augmented query ``[x * alpha / sigma^2, -alpha^2 / (2 sigma^2), 1]`` with the augmented
data ``[x1, ||x1||^2, log q]``. The data are streamed in blocks of ``chunk_size`` points
with a running (online) log-sum-exp, the trick of memory-efficient attention: a running
maximum, the running normaliser and the running weighted sums of ``x1`` and of
``||x1||^2`` are rescaled whenever the maximum grows. Peak extra memory is a few
(B, chunk_size) blocks.

Cancellation guard. The matrix-product form
:math:`\lVert x\rVert^2 - 2\alpha x\cdot x_1 + \alpha^2\lVert x_1\rVert^2` loses all
relative accuracy where :math:`x \approx \alpha_t x_1^{(i)}` (near t = 1 with small
sigma), exactly where that point dominates the softmax. The guard: the running arg-max
point :math:`k` of each row is *recomputed exactly* at the end by direct subtraction,
:math:`\lVert x - \alpha_t x_1^{(k)}\rVert^2` (a sum of squares, so it is >= 0: the
clamp at 0 comes for free), and its exact log-weight replaces the streamed one. Its
streamed contribution is exactly 1 relative to the running maximum, so the swap is
exact. The posterior mean and covariance trace are then formed *relative to*
:math:`x_1^{(k)}` (sums over the other points only), so in the one-hot limit they are
exact and the covariance trace is exactly 0, not the difference of two large numbers.
The remaining error of a non-dominant log-weight is about
:math:`\epsilon (\lVert x\rVert^2 + \alpha_t^2\lVert x_1\rVert^2)/\sigma_t^2` in
absolute terms; it matters only for points within that distance of the dominant one.
(An element-wise clamp of every streamed distance at 0 was measured at 20% of the
run time and bounds nothing useful once the dominant point is exact, so it is not used.)

See ``docs/marginal.md`` for the derivation of the closed-form divergence.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import array_api_compat
import numpy as np

from . import validation as _xp
from .paths import GaussianPath
from .typing import Array

__all__ = ["EmpiricalMarginal"]


#: Default number of (query, data point) pairs per streamed block: chunk_size is
#: ``max(1, _BLOCK_ELEMENTS // B)`` data points (16 MiB per float32 block).
_BLOCK_ELEMENTS = 1 << 22


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
        "_mean",
        "_n",
        "_pts",
        "_size",
        "_xp",
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
        if weights is not None and not array_api_compat.is_array_api_obj(weights):
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
        if weights is None:
            q = xp.full((n,), 1.0 / n, dtype=data.dtype, device=_xp.device(data))
        else:
            _xp.check_float(xp, "weights", weights, like=("data", data))
            if tuple(weights.shape) != (n,):
                raise ValueError(
                    f"`weights` must have shape (N,) = {(n,)} to match `data` of shape "
                    f"{tuple(data.shape)}, got shape {tuple(weights.shape)}"
                )
            if array_api_compat.is_numpy_array(weights):
                w = np.asarray(weights)
                if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.sum(w) > 0:
                    raise ValueError(
                        f"`weights` must be finite, non-negative and not all zero, got {w!r}"
                    )
            q = weights / xp.sum(weights)
        mean = xp.sum(q[:, None] * flat, axis=0)
        centred = flat - mean
        norms = xp.sum(centred * centred, axis=1)
        # log 0 = -inf for zero weights, without a divide-by-zero warning
        positive = q > 0
        log_q = xp.where(positive, xp.log(xp.where(positive, q, xp.ones_like(q))), -math.inf)
        self._xp = xp
        # [x1 - mean, ||x1 - mean||^2] for the weighted sums, and the augmented data
        # [x1 - mean, ||x1 - mean||^2, log q] transposed, (D + 2, N), for the logits
        self._pts = xp.concat([centred, norms[:, None]], axis=1)
        self._aug_t = xp.matrix_transpose(xp.concat([self._pts, log_q[:, None]], axis=1))
        if array_api_compat.is_numpy_array(self._aug_t):
            self._aug_t = np.ascontiguousarray(self._aug_t)
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
        _xp.check_float(xp, "x", x)
        if x.dtype != self._dtype:
            raise TypeError(
                f"`x` and `data` must share one floating dtype (no silent casts): `x` is "
                f"{x.dtype} but `data` is {self._dtype}"
            )
        _xp.check_batch("x", x)
        if tuple(int(s) for s in x.shape[1:]) != self._event:
            raise ValueError(
                f"`x` must have shape (B, *event) with event {self._event} as `data`, got "
                f"shape {tuple(x.shape)}"
            )
        tt = _xp.time_array(xp, t, x)
        c = self.path.schedule._arrays(xp, tt)
        batch = int(x.shape[0])
        flat = xp.reshape(x, (batch, self._size))
        return xp, flat, tt, c

    def _chunk_size(self, batch: int) -> int:
        chunk = self._chunk if self._chunk is not None else max(1, _BLOCK_ELEMENTS // batch)
        return min(chunk, self._n)

    def _query(self, xp: Any, flat: Array, alpha: Array, sigma: Array) -> tuple[Array, ...]:
        """Centred query, its squared norm and the augmented query row."""
        xc = flat - alpha[:, None] * self._mean  # x - alpha * mean
        sq = xp.sum(xc * xc, axis=1)
        inv = 1.0 / (sigma * sigma)
        ones = xp.ones_like(alpha)
        query = xp.concat(
            [xc * (alpha * inv)[:, None], (-0.5 * alpha * alpha * inv)[:, None], ones[:, None]],
            axis=1,
        )
        return xc, sq, query

    def _block(self, xp: Any, query: Array, start: int, stop: int) -> Array:
        # streamed logits g_i = l_i + ||x||^2 / (2 sigma^2), one matrix product
        return xp.matmul(query, self._aug_t[:, start:stop])

    def _stats(self, x: Array, t: Any) -> tuple[Any, Array, Any, dict[str, Array]]:
        """Stream over the data; return the posterior statistics of every query row."""
        xp, flat, _, c = self._prepare(x, t)
        batch, d = int(flat.shape[0]), self._size
        alpha = xp.reshape(c.alpha, (batch,))
        sigma = xp.reshape(c.sigma, (batch,))
        xc, sq, query = self._query(xp, flat, alpha, sigma)
        dtype = flat.dtype
        dev = _xp.device(flat)
        m = xp.full((batch,), -xp.finfo(dtype).max, dtype=dtype, device=dev)
        s = xp.zeros((batch,), dtype=dtype, device=dev)
        sums = xp.zeros((batch, d + 1), dtype=dtype, device=dev)  # [sum e x1, sum e ||x1||^2]
        k = None
        chunk = self._chunk_size(batch)
        for start in range(0, self._n, chunk):
            stop = min(start + chunk, self._n)
            g = self._block(xp, query, start, stop)
            g_max = xp.max(g, axis=1)
            g_arg = xp.argmax(g, axis=1) + start
            m_new = xp.maximum(m, g_max)
            k = g_arg if k is None else xp.where(g_max > m, g_arg, k)
            e = xp.exp(g - m_new[:, None])
            del g
            scale = xp.exp(m - m_new)
            s = scale * s + xp.sum(e, axis=1)
            sums = scale[:, None] * sums + xp.matmul(e, self._pts[start:stop, :])
            del e
            m = m_new
        # exact recomputation of the dominant point k (the cancellation guard)
        row_k = xp.take(self._pts, k, axis=0)
        y_k, n_k, log_q_k = row_k[:, :d], row_k[:, d], xp.take(self._log_q, k, axis=0)
        r_k = xc - alpha[:, None] * y_k
        inv2 = 0.5 / (sigma * sigma)
        # exact log-weight of k; a squared norm, so >= 0 (the clamp is automatic)
        l_k = log_q_k - xp.sum(r_k * r_k, axis=1) * inv2
        l_max = m - sq * inv2  # streamed log-weight of k (= the running maximum)
        rest = s - 1.0  # sum over the other points of exp(l_i - l_max); k contributed 1
        has_rest = rest > 0.0
        log_rest = xp.where(
            has_rest, l_max + xp.log(xp.where(has_rest, rest, xp.ones_like(rest))), -math.inf
        )
        log_z = xp.logaddexp(l_k, log_rest)
        w_k = xp.exp(l_k - log_z)
        # exp(l_max - log_z) <= 1 / rest; masked before the exp so no overflow is computed
        gap = xp.where(has_rest, l_max - log_z, xp.zeros_like(rest))
        w_rest = xp.where(has_rest, xp.exp(gap), xp.zeros_like(rest))
        # sums over the other points, relative to y_k: A = sum e (y_i - y_k),
        # C = sum e ||y_i - y_k||^2 (both exactly 0 when no other point contributes)
        s1_rest = sums[:, :d] - y_k
        a = s1_rest - rest[:, None] * y_k
        c_rest = (sums[:, d] - n_k) - 2.0 * xp.sum(y_k * s1_rest, axis=1) + rest * n_k
        shift = w_rest[:, None] * a  # denoise - y_k
        trace = w_rest * c_rest - xp.sum(shift * shift, axis=1)
        trace = xp.maximum(trace, xp.zeros_like(trace))
        stats = {
            "xc": xc,
            "alpha": alpha,
            "sigma": sigma,
            "log_z": log_z,
            "y_hat": y_k + shift,  # centred posterior mean
            "trace": trace,
            "k": k,
            "w_k": w_k,
            "w_rest": w_rest,
            "l_max": l_max,
            "m": m,
            "query": query,
        }
        return xp, flat, c, stats

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
        xp, _, _, st = self._stats(x, t)
        d = self._size
        return st["log_z"] - d * xp.log(st["sigma"]) - 0.5 * d * math.log(2.0 * math.pi)

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
        xp, _, _, st = self._stats(x, t)
        return xp.reshape(st["y_hat"] + self._mean, tuple(x.shape))

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
        xp, flat, c, st = self._stats(x, t)
        batch = int(flat.shape[0])
        ratio = xp.reshape(c.d_sigma / c.sigma, (batch, 1))
        d_alpha = xp.reshape(c.d_alpha, (batch, 1))
        resid = st["xc"] - st["alpha"][:, None] * st["y_hat"]
        out = ratio * resid + d_alpha * (st["y_hat"] + self._mean)
        return xp.reshape(out, tuple(x.shape))

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
        xp, _, _, st = self._stats(x, t)
        sigma = st["sigma"]
        resid = st["xc"] - st["alpha"][:, None] * st["y_hat"]
        return xp.reshape(-resid / (sigma * sigma)[:, None], tuple(x.shape))

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
        xp, flat, c, st = self._stats(x, t)
        batch = int(flat.shape[0])
        ratio = xp.reshape(c.d_sigma / c.sigma, (batch,))
        d_alpha = xp.reshape(c.d_alpha, (batch,))
        alpha, sigma = st["alpha"], st["sigma"]
        gain = (d_alpha - alpha * ratio) * alpha / (sigma * sigma)
        return self._size * ratio + gain * st["trace"]

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
        xp, flat, _, st = self._stats(x, t)
        batch = int(flat.shape[0])
        chunk = self._chunk_size(batch)
        blocks = []
        for start in range(0, self._n, chunk):
            stop = min(start + chunk, self._n)
            g = self._block(xp, st["query"], start, stop)
            blocks.append(xp.exp(g - st["m"][:, None]) * st["w_rest"][:, None])
        w = xp.concat(blocks, axis=1) if len(blocks) > 1 else blocks[0]
        index = xp.arange(self._n, device=_xp.device(flat))
        return xp.where(index[None, :] == st["k"][:, None], st["w_k"][:, None], w)

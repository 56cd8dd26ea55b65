r"""The exact marginal of a mixture path for a data set of token sequences.

For data :math:`q = \frac1N \sum_n \delta_{x_1^{(n)}}` the marginal path and its
posterior are, with :math:`p_t(x \mid x_1)` the conditional path with the source
marginalised (:meth:`MixturePath.log_prob`),

.. math::
    p_t(x) = \frac1N \sum_n p_t(x \mid x_1^{(n)}), \qquad
    w_n(x, t) = \frac{p_t(x \mid x_1^{(n)})}{\sum_m p_t(x \mid x_1^{(m)})}, \qquad
    p^i_{1|t}(y \mid x) = \sum_n w_n(x, t)\, \delta_{x_1^{(n)i}}(y),

and the marginal rate is :func:`~flowspec.discrete.posterior_to_rate` of that
posterior (Gat et al., 2024, Sec. 2.3). The data are streamed in blocks of
``chunk_size`` sequences with a running log-sum-exp, so memory is
O(B x chunk_size x L) whatever N.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import array_api_compat

from .. import validation
from ..typing import Array
from . import _checks
from .paths import MixturePath
from .rates import _rate_from_probs, safe_log

__all__ = ["EmpiricalMarginal"]

#: Default number of (query, data sequence) pairs per streamed block.
_BLOCK_PAIRS = 1 << 16


def _finite(xp: Any, m: Array) -> Array:
    """A running maximum with -inf (no mass yet) replaced by 0, safe to subtract."""
    return xp.where(m == -math.inf, xp.zeros_like(m), m)


class EmpiricalMarginal:
    r"""The exact marginal of a :class:`MixturePath` for the rows of ``data``.

    Parameters
    ----------
    path : MixturePath
    data : integer array, shape (N, *event)
        The data set, one sequence per row, tokens in [0, V).
    chunk_size : int, optional
        Data sequences per streamed block (default: about 65536 / B).

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> path = fd.MixturePath(fd.Linear(), vocab_size=3)
    >>> m = fd.EmpiricalMarginal(path, np.array([[0, 1], [2, 2]]))
    >>> float(np.exp(m.log_prob(np.array([[0, 1]]), 1.0))[0])
    0.5
    """

    __slots__ = ("_chunk", "_data", "_n", "path")

    path: MixturePath
    _data: Array
    _n: int
    _chunk: int | None

    def __init__(self, path: MixturePath, data: Array, chunk_size: int | None = None) -> None:
        if not isinstance(path, MixturePath):
            raise TypeError(
                f"`path` must be a flowspec.discrete.MixturePath, got {validation.describe(path)}"
            )
        xp = validation.namespace(data=data)
        _checks.check_tokens(xp, "data", data, path.vocab_size)
        if int(data.shape[0]) < 1:
            raise ValueError("`data` must hold at least one sequence, got N = 0")
        if chunk_size is not None and (
            isinstance(chunk_size, bool)
            or not isinstance(chunk_size, numbers.Integral)
            or chunk_size < 1
        ):
            raise ValueError(
                f"`chunk_size` must be None or an integer >= 1, got {validation.describe(chunk_size)}"
            )
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_data", xp.asarray(data, copy=True))
        object.__setattr__(self, "_n", int(data.shape[0]))
        object.__setattr__(self, "_chunk", None if chunk_size is None else int(chunk_size))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"EmpiricalMarginal is immutable: cannot set `{name}`")

    def __repr__(self) -> str:
        return f"EmpiricalMarginal({self.path!r}, N={self._n}, event={tuple(self._data.shape[1:])})"

    @property
    def data(self) -> Array:
        """A copy of the data set."""
        xp = array_api_compat.array_namespace(self._data)
        return xp.asarray(self._data, copy=True)

    def _prepare(self, x: Array, t: Any) -> tuple[Any, Any, Array, Array]:
        xp = validation.namespace(x=x, t=t)
        if array_api_compat.array_namespace(self._data) is not xp:
            raise TypeError(
                "`x` and the marginal's `data` must come from one library: `x` is "
                f"{validation.describe(x)} but `data` is {validation.describe(self._data)}"
            )
        _checks.check_tokens(xp, "x", x, self.path.vocab_size)
        if tuple(x.shape[1:]) != tuple(self._data.shape[1:]):
            raise ValueError(
                f"`x` must have shape (B, *event) with event = {tuple(self._data.shape[1:])} "
                f"as the data, got shape {tuple(x.shape)}"
            )
        dtype = _checks.float_dtype(xp, t)
        tt = _checks.times(xp, t, x, dtype)
        return xp, dtype, tt, self._token_logs(xp, x, tt, dtype)

    def _token_logs(self, xp: Any, x: Array, tt: Array, dtype: Any) -> tuple[Array, Array]:
        """Per token of x: log p(x^i | x1^i) when x^i = x1^i (match) and when not (miss)."""
        c = self.path.schedule(tt)
        source = self.path._source_prob(xp, x, dtype)
        batch = int(x.shape[0])
        match = xp.reshape(safe_log(xp, c.kappa + c.complement * source), (batch, 1, -1))
        miss = xp.reshape(safe_log(xp, c.complement * source), (batch, 1, -1))
        return match, miss

    def _chunk_size(self, batch: int) -> int:
        chunk = self._chunk if self._chunk is not None else max(1, _BLOCK_PAIRS // batch)
        return min(chunk, self._n)

    def _blocks(self, xp: Any, x: Array, logs: tuple[Array, Array]) -> Any:
        """Yield (start, stop, log p_t(x | x1_n)) blocks of shape (B, n)."""
        match, miss = logs
        batch = int(x.shape[0])
        flat_x = xp.reshape(x, (batch, 1, -1))
        chunk = self._chunk_size(batch)
        for start in range(0, self._n, chunk):
            stop = min(start + chunk, self._n)
            block = xp.reshape(self._data[start:stop, ...], (1, stop - start, -1))
            same = flat_x == block
            yield start, stop, xp.sum(xp.where(same, match, miss), axis=2)

    def log_prob(self, x: Array, t: Array | float) -> Array:
        r"""Log-probability of the marginal path :math:`\log p_t(x)`, shape (B,).

        ``-inf`` off the support (for example a non-mask token at t = 0 with a mask
        source). A Python-number ``t`` is evaluated in the namespace's default floating
        dtype.
        """
        xp, _dtype, _, logs = self._prepare(x, t)
        run_max: Array = None
        run_sum: Array = None
        for _, _, lp in self._blocks(xp, x, logs):
            new = xp.max(lp, axis=1) if run_max is None else xp.maximum(run_max, xp.max(lp, axis=1))
            shift = _finite(xp, new)
            part = xp.sum(xp.exp(lp - shift[:, None]), axis=1)
            run_sum = part if run_sum is None else run_sum * xp.exp(run_max - shift) + part
            run_max = new
        return _finite(xp, run_max) + safe_log(xp, run_sum) - math.log(self._n)

    def posterior(self, x: Array, t: Array | float) -> Array:
        r"""Posterior weights :math:`w_n(x, t)` over the data sequences, shape (B, N).

        ``nan`` for an x off the support of :math:`p_t` (0 / 0).
        """
        xp, _, _, logs = self._prepare(x, t)
        blocks = [lp for _, _, lp in self._blocks(xp, x, logs)]
        lp = xp.concat(blocks, axis=1)
        m = xp.max(lp, axis=1, keepdims=True)
        w = xp.exp(lp - m)
        return w / xp.sum(w, axis=1, keepdims=True)

    def denoise(self, x: Array, t: Array | float) -> Array:
        r"""The probability denoiser :math:`p^i_{1|t}(y \mid x)`, shape (B, *event, V)."""
        xp, dtype, _, logs = self._prepare(x, t)
        vocab = self.path.vocab_size
        run_max: Array = None
        acc: Array = None
        total: Array = None
        for start, stop, lp in self._blocks(xp, x, logs):
            new = xp.max(lp, axis=1) if run_max is None else xp.maximum(run_max, xp.max(lp, axis=1))
            shift = _finite(xp, new)
            w = xp.exp(lp - shift[:, None])  # (B, n)
            hot = _checks.one_hot(xp, self._data[start:stop, ...], vocab, dtype)
            part = xp.matmul(w, xp.reshape(hot, (stop - start, -1)))  # (B, L V)
            if run_max is None:
                acc, total = part, xp.sum(w, axis=1)
            else:
                scale = xp.exp(run_max - shift)
                acc = acc * scale[:, None] + part
                total = total * scale + xp.sum(w, axis=1)
            run_max = new
        out = acc / total[:, None]
        return xp.reshape(out, (*tuple(x.shape), vocab))

    def rate(self, x: Array, t: Array | float) -> Array:
        r"""The marginal rate :math:`u^i_t(y, x)`, shape (B, *event, V).

        :func:`~flowspec.discrete.posterior_to_rate` of :meth:`denoise`; finite on
        [0, 1).
        """
        xp, _dtype, tt, _ = self._prepare(x, t)
        return _rate_from_probs(xp, self.path.schedule.jump(tt), self.denoise(x, t), x)

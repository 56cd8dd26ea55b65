r"""The discrete continuity equation (Kolmogorov forward equation), checked numerically.

A rate :math:`u_t` generates a probability path :math:`p_t` on a finite state space
when, for every state x,

.. math:: \partial_t p_t(x) = \sum_{y} u_t(x, y)\, p_t(y)

with the diagonal :math:`u_t(x, x) = -\sum_{y \ne x} u_t(y, x)` (Gat et al., 2024,
the Kolmogorov equation of Sec. 2.1, the discrete counterpart of the continuity
equation, Lipman et al. 2023 eq. 26). For factorised rates, which move one token at
a time, the sum runs over the :math:`L (V - 1)` sequences that differ from x in one
token, and x itself. Divided by :math:`p_t(x) > 0`:

.. math:: r_t(x) = \partial_t \log p_t(x) - \sum_i \sum_{v} u^i_t(x^i, x^{i \leftarrow v})
          \, \frac{p_t(x^{i \leftarrow v})}{p_t(x)} = 0,

where :math:`x^{i \leftarrow v}` is x with token i set to v (for v = x^i the term is
the diagonal :math:`u^i_t(x^i, x)`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .. import validation
from ..typing import Array
from . import _checks

__all__ = ["kolmogorov_residual"]


def kolmogorov_residual(
    log_prob: Callable[[Array, Array], Array],
    rate: Callable[[Array, Array], Array],
    t: Array | float,
    x: Array,
    vocab_size: int,
) -> Array:
    r"""The log-form Kolmogorov residual of a (path, rate) pair at the states ``x``.

    .. math:: r_t(x) = \partial_t \log p_t(x) - \sum_i \sum_{v}
              u^i_t(x^i, x^{i \leftarrow v})\, e^{\log p_t(x^{i \leftarrow v}) - \log p_t(x)}

    It vanishes when ``rate`` generates ``log_prob``. Only the neighbours of ``x`` are
    evaluated (B L V states, one batched call of each callable), so the state space
    need not be enumerated; ``x`` must lie where :math:`p_t(x) > 0` (elsewhere the
    log form is ``nan``). Neighbours with :math:`p_t = 0` contribute nothing, whatever
    ``rate`` returns for them.

    The time derivative is a central difference with step :math:`h = \epsilon^{1/3}`,
    :math:`\epsilon` the machine epsilon of the floating dtype, divided by the step
    actually represented, ``(t + h) - (t - h)``. Its error is
    :math:`h^2 |\partial_t^3 \log p| / 6 + \epsilon |\log p| / h`, i.e.
    :math:`O(\epsilon^{2/3})` times the size of the third derivative and of
    :math:`\log p`: about 1e-10 relative in float64 and 1e-4 in float32. The sum is
    exact up to rounding. ``t - h`` and ``t + h`` must lie where ``log_prob`` is
    defined (inside (0, 1) for the mixture paths).

    Parameters
    ----------
    log_prob : callable
        ``log_prob(t, x) -> (B,)``, t of shape (B,) in the floating dtype.
    rate : callable
        ``rate(t, x) -> (B, *event, V)``, the factorised rate :math:`u^i_t(y, x)`.
    t : float or array, shape () or (B,)
        Times; a Python number is evaluated in the namespace's default floating dtype.
    x : integer array, shape (B, *event)
    vocab_size : int

    Returns
    -------
    array, shape (B,)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> path = fd.MixturePath(fd.Linear(), vocab_size=3); x1 = np.array([[2, 0]])
    >>> lp = lambda t, x: path.log_prob(x, np.broadcast_to(x1, x.shape), t)
    >>> u = lambda t, x: path.rate(x, np.broadcast_to(x1, x.shape), t)
    >>> bool(abs(fd.kolmogorov_residual(lp, u, 0.5, np.array([[1, 0]]), 3)[0]) < 1e-8)
    True
    """
    for name, fn in (("log_prob", log_prob), ("rate", rate)):
        if not callable(fn):
            raise TypeError(
                f"`{name}` must be a callable {name}(t, x), got {validation.describe(fn)}"
            )
    vocab = _checks.vocab_size("vocab_size", vocab_size)
    xp = validation.namespace(x=x, t=t)
    _checks.check_tokens(xp, "x", x, vocab)
    dtype = _checks.float_dtype(xp, t)
    batch = int(x.shape[0])
    event = tuple(x.shape[1:])
    tb = xp.reshape(_checks.times(xp, t, x, dtype), (batch,))
    h = float(xp.finfo(dtype).eps) ** (1.0 / 3.0)

    def lp(tt: Array, xx: Array) -> Array:
        return validation.check_output(
            "log_prob(t, x)", log_prob(tt, xx), xp, (xx.shape[0],), dtype
        )

    def rt(tt: Array, xx: Array) -> Array:
        shape = (*tuple(xx.shape), vocab)
        return validation.check_output("rate(t, x)", rate(tt, xx), xp, shape, dtype)

    t_plus, t_minus = tb + h, tb - h
    dt_log_p = (lp(t_plus, x) - lp(t_minus, x)) / (t_plus - t_minus)

    # the B L V neighbours x^{i <- v}, batched as (B, L, V, L) -> (B L V, *event)
    d = validation.event_size(x)
    dev = validation.device(x)
    flat = xp.reshape(x, (batch, 1, 1, d))
    position = xp.reshape(xp.arange(d, device=dev), (1, d, 1, 1)) == xp.reshape(
        xp.arange(d, device=dev), (1, 1, 1, d)
    )
    values = xp.astype(xp.reshape(xp.arange(vocab, device=dev), (1, 1, vocab, 1)), x.dtype)
    neighbours = xp.where(position, values, flat)  # (B, d, V, d)
    many = batch * d * vocab
    neighbours = xp.reshape(neighbours, (many, *event))
    t_many = xp.reshape(xp.broadcast_to(xp.reshape(tb, (batch, 1)), (batch, d * vocab)), (many,))
    lp_x = lp(tb, x)
    lp_n = xp.reshape(lp(t_many, neighbours), (batch, d, vocab))
    u_n = xp.reshape(rt(t_many, neighbours), (batch, d, vocab, d, vocab))
    # u^i(x^i, x^{i <- v}): the rate of token i of neighbour (i, v) towards x^i
    own = xp.reshape(xp.astype(position, dtype), (1, d, 1, d, 1))
    target = _checks.one_hot(xp, xp.reshape(x, (batch, 1, 1, d)), vocab, dtype)  # (B,1,1,d,V)
    u_in = xp.sum(xp.sum(u_n * own * target, axis=4), axis=3)  # (B, d, V)
    ratio = xp.exp(lp_n - xp.reshape(lp_x, (batch, 1, 1)))
    # a neighbour of probability 0 sends no mass, whatever its rate (which may be nan
    # there: the posterior of a state off the support is 0 / 0)
    empty = lp_n == -math.inf
    flow = xp.where(empty, xp.zeros_like(ratio), u_in) * ratio
    inflow = xp.sum(xp.reshape(flow, (batch, -1)), axis=1)
    return dt_log_p - inflow

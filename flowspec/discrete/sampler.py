r"""The discrete Euler (jump) sampler of Discrete Flow Matching.

One step from t to t + h moves each token independently (Gat et al., 2024, Sec. 2.5):

.. math:: x^i_{t+h} \sim \delta_{x^i_t}(\cdot) + h\, u^i_t(\cdot, x_t).

This is a probability vector only while :math:`h \lambda^i \le 1`, with
:math:`\lambda^i = \sum_{y \ne x^i} u^i_t(y, x_t)` the total jump rate. Where
:math:`h\lambda^i > 1` the probability of staying is clamped at 0 and the jump
probabilities :math:`h u^i_t(y, x_t)` are rescaled by :math:`1 / (h\lambda^i)` to sum to
one. On the paper's grid :math:`t_k = t_0 + k h` the rate is evaluated at
:math:`t_k < 1` only, where it is finite; for the linear schedule the last step has
:math:`h\lambda = 1 - p_{1|t}(x^i)` and draws the token from the posterior exactly.

Categorical draws use the inverse CDF of caller-drawn uniforms, so the core needs no
random generator and runs on every Array API library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import validation
from ..typing import Array
from . import _checks

__all__ = ["categorical", "euler", "jump_probabilities", "jump_step"]


def categorical(probs: Array, u: Array) -> Array:
    r"""Draw one index per row of ``probs`` by the inverse CDF of the uniforms ``u``.

    Returns the first index k with :math:`u \sum_j p_j < \sum_{j \le k} p_j`, so index k
    is drawn for a fraction :math:`p_k / \sum_j p_j` of u in [0, 1) and an index of
    probability 0 is never drawn. Rows need not be normalised.

    Parameters
    ----------
    probs : array, shape (*batch, V)
        Non-negative weights, at least one positive per row.
    u : array, shape (*batch)
        Uniforms in [0, 1), same floating dtype.

    Returns
    -------
    int64 array, shape (*batch)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> p = np.array([[0.25, 0.0, 0.75]] * 3)
    >>> fd.categorical(p, np.array([0.1, 0.25, 0.9])).tolist()
    [0, 2, 2]
    """
    xp = validation.namespace(probs=probs, u=u)
    validation.check_float(xp, "probs", probs)
    validation.check_float(xp, "u", u, like=("probs", probs))
    _checks.check_uniforms(xp, "u", u)
    if probs.ndim < 1 or tuple(probs.shape[:-1]) != tuple(u.shape):
        raise ValueError(
            f"`probs` must have shape (*u.shape, V) = {tuple(u.shape)} + (V,), got shape "
            f"{tuple(probs.shape)}"
        )
    cdf = xp.cumulative_sum(probs, axis=-1)
    level = xp.expand_dims(u, axis=-1) * cdf[..., -1:]
    return xp.astype(xp.sum(xp.astype(cdf <= level, xp.int64), axis=-1), xp.int64)


def jump_probabilities(x: Array, rate: Array, h: float | Array) -> Array:
    r"""The per-token law of one Euler step, :math:`\delta_{x^i} + h u^i_t(\cdot, x)`, clamped.

    Off the diagonal :math:`h u^i(y, x) / \max(1, h\lambda^i)`; on it
    :math:`\max(0, 1 - h\lambda^i)`, with :math:`\lambda^i` the sum of the off-diagonal
    rates (the diagonal of ``rate`` is not read).

    Parameters
    ----------
    x : integer array, shape (B, *event)
    rate : array, shape (B, *event, V)
        :math:`u^i_t(y, x)`, non-negative off the diagonal.
    h : float or 0-d array
        The step, > 0.

    Returns
    -------
    array, shape (B, *event, V), each row a probability vector

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> u = np.array([[[-3.0, 1.0, 2.0]]])
    >>> fd.jump_probabilities(np.array([[0]]), u, 0.1).round(12).tolist()
    [[[0.7, 0.1, 0.2]]]
    >>> fd.jump_probabilities(np.array([[0]]), u, 0.5).round(12).tolist()
    [[[0.0, 0.333333333333, 0.666666666667]]]
    """
    xp = validation.namespace(x=x, rate=rate, h=h)
    _checks.check_tokens(xp, "x", x)
    validation.check_float(xp, "rate", rate)
    vocab = _checks.check_last_axis("rate", rate, "x", x)
    _checks.check_tokens(xp, "x", x, vocab)
    if not hasattr(h, "shape"):
        h = validation.real_number("h", h)
        if not h > 0.0:
            raise ValueError(f"`h` must be > 0, got {h!r}")
    return _probabilities(xp, x, rate, h, vocab)


def _probabilities(xp: Any, x: Array, rate: Array, h: Any, vocab: int) -> Array:
    on_x = _checks.one_hot(xp, x, vocab, rate.dtype) == 1.0
    off = xp.where(on_x, xp.zeros_like(rate), h * rate)
    total = xp.sum(off, axis=-1, keepdims=True)
    over = total > 1.0
    scale = xp.where(over, total, xp.ones_like(total))
    stay = xp.where(over, xp.zeros_like(total), 1.0 - total)
    return xp.where(on_x, stay, off / scale)


def jump_step(x: Array, rate: Array, h: float | Array, u: Array) -> Array:
    r"""One Euler (jump) step: each token drawn from :func:`jump_probabilities` by ``u``.

    Parameters
    ----------
    x : integer array, shape (B, *event)
    rate : array, shape (B, *event, V)
    h : float or 0-d array, > 0
    u : array, shape (B, *event)
        Uniforms in [0, 1), in ``rate``'s dtype.

    Returns
    -------
    integer array, shape (B, *event), dtype of ``x``
    """
    probs = jump_probabilities(x, rate, h)
    _checks.check_same_shape("u", u, "x", x)
    xp = validation.namespace(x=x, u=u)
    return xp.astype(categorical(probs, u), x.dtype)


def euler(
    rate: Callable[[Array, Array], Array],
    x0: Array,
    u: Array,
    *,
    steps: int,
    t0: float = 0.0,
    t1: float = 1.0,
    return_path: bool = False,
) -> Array:
    r"""Sample with the discrete Euler (jump) rule on the grid :math:`t_k = t_0 + k h`.

    :math:`h = (t_1 - t_0) / \text{steps}`; step k evaluates ``rate(t_k, x)`` and moves
    every token by :func:`jump_step` with the uniforms ``u[k]``. The times are the
    continuous core's Euler times (computed from k, never accumulated); the rate is
    never evaluated at :math:`t_1`.

    Parameters
    ----------
    rate : callable
        ``rate(t, x) -> (B, *event, V)``, t of shape (B,) in ``u``'s dtype; for a
        trained denoiser, ``lambda t, x: path.posterior_to_rate(x, t, logits=model(t, x))``.
    x0 : integer array, shape (B, *event)
        Source tokens.
    u : floating array, shape (steps, B, *event)
        Uniforms in [0, 1), one per token and step.
    steps : int >= 1
    t0, t1 : float
        0 <= t0 < t1 <= 1.
    return_path : bool
        Also return every state: shape (steps + 1, B, *event).

    Returns
    -------
    integer array, shape (B, *event) (or the path), dtype of ``x0``

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> path = fd.MixturePath(fd.Linear(), vocab_size=3, mask_token=2)
    >>> m = fd.EmpiricalMarginal(path, np.array([[0, 1]]))
    >>> u = np.random.default_rng(0).random((4, 5, 2))
    >>> fd.euler(lambda t, x: m.rate(x, t), np.full((5, 2), 2), u, steps=4).tolist()[0]
    [0, 1]
    """
    if not callable(rate):
        raise TypeError(f"`rate` must be a callable rate(t, x), got {validation.describe(rate)}")
    times, h = validation.euler_times(steps, t0, t1)
    if not h > 0.0 or times[0] < 0.0 or t1 > 1.0:
        raise ValueError(f"`t0` and `t1` must satisfy 0 <= t0 < t1 <= 1, got t0={t0!r}, t1={t1!r}")
    xp = validation.namespace(x0=x0, u=u)
    _checks.check_tokens(xp, "x0", x0)
    _checks.check_uniforms(xp, "u", u)
    expected = (len(times), *tuple(x0.shape))
    if tuple(u.shape) != expected:
        raise ValueError(
            f"`u` must have shape (steps, *x0.shape) = {expected}, got shape {tuple(u.shape)}"
        )
    batch = int(x0.shape[0])
    x = xp.asarray(x0, copy=True)
    states = [x]
    for k, t in enumerate(times):
        tb = xp.full((batch,), t, dtype=u.dtype, device=validation.device(x0))
        out = rate(tb, x)
        shape: tuple[int, ...] = tuple(getattr(out, "shape", ()))
        width = int(shape[-1]) if len(shape) == x.ndim + 1 else 0
        values = validation.check_output("rate(t, x)", out, xp, (*tuple(x.shape), width), u.dtype)
        vocab = int(values.shape[-1])
        probs = _probabilities(xp, x, values, h, vocab)
        x = xp.astype(categorical(probs, u[k, ...]), x0.dtype)
        if return_path:
            states.append(x)
    return xp.stack(states, axis=0) if return_path else x

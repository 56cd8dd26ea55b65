r"""Rates (probability velocities) of the mixture paths, and the denoiser parameterisation.

For the factorised mixture path (Gat et al., 2024, Sec. 2.2-2.3) a rate acts on one
token at a time: :math:`u^i_t(y, x)` is the rate at which token i of the sequence x
jumps to the value y. It is stored as an array of shape (B, *event, V) whose entry
``[..., i, y]`` is :math:`u^i_t(y, x)`; off the diagonal (:math:`y \ne x^i`) it is
non-negative and the diagonal entry is minus their sum, so every row sums to zero.

The conditional rate that generates :math:`p_t(\cdot \mid x_1)` is

.. math:: u^i_t(y, x \mid x_1) = \frac{\dot\kappa_t}{1 - \kappa_t}
          \left(\delta_{x_1^i}(y) - \delta_{x^i}(y)\right),

and the marginal rate is its posterior mean, a function of the probability denoiser
:math:`p_{1|t}(y \mid x)` (the posterior of the data token given :math:`x_t = x`):

.. math:: u^i_t(y, x) = \frac{\dot\kappa_t}{1 - \kappa_t}
          \left(p^i_{1|t}(y \mid x) - \delta_{x^i}(y)\right).
"""

from __future__ import annotations

import math
from typing import Any

from .. import validation
from ..typing import Array
from . import _checks
from .schedules import KappaSchedule, _divide

__all__ = ["conditional_rate", "log_posterior", "posterior_to_rate", "rate_to_posterior"]


def _check_schedule(schedule: Any) -> None:
    if not isinstance(schedule, KappaSchedule):
        raise TypeError(
            "`schedule` must be a flowspec.discrete.KappaSchedule (Linear, Polynomial, "
            f"Cosine, ...), got {validation.describe(schedule)}"
        )


def _one_posterior(probs: Any, logits: Any) -> tuple[str, Array]:
    if (probs is None) == (logits is None):
        raise TypeError("give exactly one of `probs` and `logits`")
    return ("probs", probs) if probs is not None else ("logits", logits)


def safe_log(xp: Any, value: Array) -> Array:
    """``log`` with ``log 0 = -inf`` returned without a floating-point warning."""
    positive = value > 0.0
    logs = xp.log(xp.where(positive, value, xp.ones_like(value)))
    return xp.where(positive, logs, xp.where(value == 0.0, logs - math.inf, logs * math.nan))


def log_posterior(xp: Any, name: str, value: Array) -> tuple[Array, Array]:
    """``(p, log p)`` over the last axis from probabilities or from logits.

    Logits go through a stable log-softmax (the maximum subtracted before ``exp``);
    probabilities are used as given (``log 0 = -inf``).
    """
    if name == "probs":
        return value, safe_log(xp, value)
    m = xp.max(value, axis=-1, keepdims=True)
    shifted = value - m
    log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
    return xp.exp(log_p), log_p


def _rate_from_probs(xp: Any, jump: Array, p: Array, x: Array) -> Array:
    """``jump * (p - onehot(x))`` with an exact zero row sum; ``jump * 0 = 0`` at jump = inf."""
    vocab = int(p.shape[-1])
    on_x = _checks.one_hot(xp, x, vocab, p.dtype) == 1.0
    c = xp.expand_dims(jump, axis=-1)
    # a jump towards a value of zero posterior probability has rate 0 for every finite
    # time and so in the limit t -> 1 as well: where p = 0 the rate is 0, never inf * 0
    still = on_x | (p == 0.0)
    off = xp.where(still, xp.zeros_like(p), c) * xp.where(still, xp.zeros_like(p), p)
    diagonal = 0.0 - xp.sum(off, axis=-1, keepdims=True)
    return xp.where(on_x, diagonal, off)


def posterior_to_rate(
    schedule: KappaSchedule,
    x: Array,
    t: Array | float,
    *,
    probs: Array | None = None,
    logits: Array | None = None,
) -> Array:
    r"""The marginal rate from the probability denoiser :math:`p_{1|t}(\cdot \mid x)`.

    .. math:: u^i_t(y, x) = \frac{\dot\kappa_t}{1 - \kappa_t}
              \left(p^i_{1|t}(y \mid x) - \delta_{x^i}(y)\right)

    (Gat et al., 2024, the marginal probability velocity of the mixture path, Sec. 2.3).
    The off-diagonal entries are the jump coefficient times the posterior; the diagonal
    is minus their sum, computed as such (no ``1 - p`` cancellation), so every row sums
    to zero. Logits are normalised with a stable log-softmax.

    Finite on [0, 1). At t = 1 the jump coefficient is infinite: the rate is 0 towards
    values of zero posterior probability (its limit) and ``inf`` towards the others, so
    it is finite there exactly when the posterior is the point mass at ``x``.

    Parameters
    ----------
    schedule : KappaSchedule
    x : integer array, shape (B, *event)
        The current tokens :math:`x_t`.
    t : float or array, shape () or (B,)
    probs, logits : array, shape (B, *event, V)
        The posterior, as probabilities or as logits (exactly one of them).

    Returns
    -------
    array, shape (B, *event, V), in the posterior's namespace and dtype

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> x = np.array([[0]]); p = np.array([[[0.5, 0.25, 0.25]]])
    >>> fd.posterior_to_rate(fd.Linear(), x, 0.5, probs=p).tolist()
    [[[-1.0, 0.5, 0.5]]]
    """
    _check_schedule(schedule)
    name, value = _one_posterior(probs, logits)
    xp = validation.namespace(x=x, t=t, **{name: value})
    _checks.check_tokens(xp, "x", x)
    validation.check_float(xp, name, value)
    vocab = _checks.check_last_axis(name, value, "x", x)
    _checks.check_tokens(xp, "x", x, vocab)
    tt = _checks.times(xp, t, x, value.dtype)
    p, _ = log_posterior(xp, name, value)
    return _rate_from_probs(xp, schedule.jump(tt), p, x)


def conditional_rate(
    schedule: KappaSchedule, x: Array, x1: Array, t: Array | float, vocab_size: int
) -> Array:
    r"""The conditional rate :math:`u^i_t(y, x \mid x_1)` of the mixture path.

    .. math:: u^i_t(y, x \mid x_1) = \frac{\dot\kappa_t}{1 - \kappa_t}
              \left(\delta_{x_1^i}(y) - \delta_{x^i}(y)\right)

    It generates :math:`p_t(\cdot \mid x_1)` for any source distribution (and
    :math:`p_t(\cdot \mid x_0, x_1)`); it is :func:`posterior_to_rate` with the point
    mass at :math:`x_1` as posterior. Finite on [0, 1); at t = 1 it is 0 where
    :math:`x = x_1` and infinite elsewhere.

    Parameters
    ----------
    schedule : KappaSchedule
    x, x1 : integer arrays, shape (B, *event)
    t : float or array, shape () or (B,)
        A Python number is evaluated in the namespace's default floating dtype.
    vocab_size : int

    Returns
    -------
    array, shape (B, *event, V)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> fd.conditional_rate(fd.Linear(), np.array([[0, 2]]), np.array([[1, 2]]), 0.5, 3).tolist()
    [[[-2.0, 2.0, 0.0], [0.0, 0.0, 0.0]]]
    """
    _check_schedule(schedule)
    vocab = _checks.vocab_size("vocab_size", vocab_size)
    xp = validation.namespace(x=x, x1=x1, t=t)
    _checks.check_tokens(xp, "x", x, vocab)
    _checks.check_tokens(xp, "x1", x1, vocab)
    _checks.check_same_shape("x", x, "x1", x1)
    dtype = _checks.float_dtype(xp, t)
    tt = _checks.times(xp, t, x, dtype)
    return _rate_from_probs(xp, schedule.jump(tt), _checks.one_hot(xp, x1, vocab, dtype), x)


def rate_to_posterior(schedule: KappaSchedule, rate: Array, x: Array, t: Array | float) -> Array:
    r"""The probability denoiser :math:`p_{1|t}(\cdot \mid x)` of a rate (the inverse map).

    .. math:: p^i_{1|t}(y \mid x) = \frac{1 - \kappa_t}{\dot\kappa_t}\, u^i_t(y, x)
              \quad (y \ne x^i), \qquad
              p^i_{1|t}(x^i \mid x) = 1 - \sum_{y \ne x^i} p^i_{1|t}(y \mid x).

    Defined where the jump coefficient is positive and finite: on (0, 1), and at t = 0
    when :math:`\dot\kappa_0 > 0` (not for :class:`Polynomial` with n > 1 or
    :class:`Cosine`, whose rates vanish at t = 0 whatever the posterior). Elsewhere the
    arithmetic gives ``nan``.

    Parameters
    ----------
    schedule : KappaSchedule
    rate : array, shape (B, *event, V)
    x : integer array, shape (B, *event)
    t : float or array, shape () or (B,)

    Returns
    -------
    array, shape (B, *event, V)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> u = np.array([[[-1.0, 0.5, 0.5]]])
    >>> fd.rate_to_posterior(fd.Linear(), u, np.array([[0]]), 0.5).tolist()
    [[[0.5, 0.25, 0.25]]]
    """
    _check_schedule(schedule)
    xp = validation.namespace(rate=rate, x=x, t=t)
    validation.check_float(xp, "rate", rate)
    _checks.check_tokens(xp, "x", x)
    vocab = _checks.check_last_axis("rate", rate, "x", x)
    _checks.check_tokens(xp, "x", x, vocab)
    tt = _checks.times(xp, t, x, rate.dtype)
    c = schedule(tt)
    inverse = xp.expand_dims(_divide(xp, c.complement, c.d_kappa), axis=-1)
    on_x = _checks.one_hot(xp, x, vocab, rate.dtype) == 1.0
    off = xp.where(on_x, xp.zeros_like(rate), rate * inverse)
    stay = 1.0 - xp.sum(off, axis=-1, keepdims=True)
    return xp.where(on_x, stay, off)

r"""Training losses of Discrete Flow Matching: cross-entropy and the generalised KL.

Both take the model's posterior :math:`p_{1|t}(\cdot \mid x_t)` (probabilities or
logits) and the data tokens :math:`x_1`; the loss of one sample is the sum over its
tokens, and the batch is reduced by its mean (default), its sum or not at all, as
:func:`flowspec.cfm_loss` does.
"""

from __future__ import annotations

from typing import Any, Literal

from .. import validation
from ..typing import Array
from . import _checks
from .rates import _one_posterior, log_posterior
from .schedules import KappaSchedule

__all__ = ["cross_entropy", "generalized_kl"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(xp: Any, per_token: Array, reduction: str) -> Array:
    per_sample = xp.sum(xp.reshape(per_token, (per_token.shape[0], -1)), axis=1)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return xp.sum(per_sample)
    return xp.mean(per_sample)


def _prepare(
    x1: Array, probs: Any, logits: Any, reduction: str, extra: dict[str, Any]
) -> tuple[Any, str, Array, int]:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
    name, value = _one_posterior(probs, logits)
    xp = validation.namespace(x1=x1, **{name: value}, **extra)
    _checks.check_tokens(xp, "x1", x1)
    validation.check_float(xp, name, value)
    vocab = _checks.check_last_axis(name, value, "x1", x1)
    _checks.check_tokens(xp, "x1", x1, vocab)
    return xp, name, value, vocab


def _at(xp: Any, values: Array, mask: Array) -> Array:
    """``values[..., x]`` for the one-hot boolean ``mask`` of x (no 0 * inf)."""
    return xp.sum(xp.where(mask, values, xp.zeros_like(values)), axis=-1)


def cross_entropy(
    x1: Array,
    *,
    probs: Array | None = None,
    logits: Array | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Array:
    r"""The cross-entropy of the posterior at the data, :math:`-\sum_i \log p^i_{1|t}(x_1^i \mid x_t)`.

    The training loss of Gat et al. (2024, Sec. 2.4) for the probability denoiser: its
    minimiser over all posteriors is the true :math:`p_{1|t}`. It carries no time
    weight, so it is finite at every t, t = 1 included, wherever the model gives the
    data token a positive probability (``inf`` where it gives it probability 0).
    Logits are normalised with a stable log-softmax.

    Parameters
    ----------
    x1 : integer array, shape (B, *event)
    probs, logits : array, shape (B, *event, V)
        The posterior :math:`p_{1|t}(\cdot \mid x_t)`, exactly one of them.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    array, shape () for "mean" and "sum", (B,) for "none"

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> p = np.array([[[0.5, 0.5], [1.0, 0.0]]]); x1 = np.array([[1, 0]])
    >>> round(float(fd.cross_entropy(x1, probs=p)), 6)
    0.693147
    """
    xp, name, value, vocab = _prepare(x1, probs, logits, reduction, {})
    _, log_p = log_posterior(xp, name, value)
    on_x1 = _checks.one_hot(xp, x1, vocab, value.dtype) == 1.0
    return _reduce(xp, -_at(xp, log_p, on_x1), reduction)


def generalized_kl(
    schedule: KappaSchedule,
    x1: Array,
    x: Array,
    t: Array | float,
    *,
    probs: Array | None = None,
    logits: Array | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Array:
    r"""The generalised KL between the conditional rate and the model's rate, per sample.

    For a token with :math:`x = x_t^i`, :math:`p = p^i_{1|t}(\cdot \mid x_t)` and the
    jump coefficient :math:`c_t = \dot\kappa_t / (1 - \kappa_t)`, the Bregman divergence
    of :math:`u \mapsto u \log u` between the conditional rate
    :math:`c_t \delta_{x_1}` and the model rate :math:`c_t p` (off the diagonal) is

    .. math:: \ell = c_t \Big(\sum_{y \ne x} p(y)\Big) \ \text{if } x = x_1^i, \qquad
              \ell = c_t \big(-\log p(x_1^i) - p(x)\big) \ \text{otherwise},

    i.e. :math:`-c_t\,[p(x) - \delta_{x_1}(x) + (1 - \delta_{x_1}(x)) \log p(x_1)]`, the
    loss of flow_matching's ``MixturePathGeneralizedKL``. Both brackets are
    non-negative (the first is computed as a sum, not as ``1 - p(x)``).

    **At t = 1** the weight :math:`c_1` is infinite and the mathematics gives no finite
    value unless the bracket vanishes: the loss is 0 for a token whose bracket is
    exactly 0 (a model that is exactly right) and ``inf``, on purpose, otherwise. The
    expected loss over t is finite only for posteriors that become exact as
    :math:`t \to 1`; sample t in [0, 1) (or use :func:`cross_entropy`) to train.

    Parameters
    ----------
    schedule : KappaSchedule
    x1 : integer array, shape (B, *event)
        Data tokens.
    x : integer array, shape (B, *event)
        The path sample :math:`x_t`.
    t : float or array, shape () or (B,)
    probs, logits : array, shape (B, *event, V)
        The model posterior, exactly one of them.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    array, shape () for "mean" and "sum", (B,) for "none"

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> p = np.array([[[0.5, 0.5]]])
    >>> fd.generalized_kl(fd.Linear(), np.array([[1]]), np.array([[1]]), 0.5, probs=p).tolist()
    1.0
    """
    xp, name, value, vocab = _prepare(x1, probs, logits, reduction, {"x": x, "t": t})
    _checks.check_tokens(xp, "x", x, vocab)
    _checks.check_same_shape("x", x, "x1", x1)
    tt = _checks.times(xp, t, x, value.dtype)
    p, log_p = log_posterior(xp, name, value)
    on_x = _checks.one_hot(xp, x, vocab, value.dtype) == 1.0
    on_x1 = _checks.one_hot(xp, x1, vocab, value.dtype) == 1.0
    p_x = _at(xp, p, on_x)
    stayed = x == x1
    away = xp.sum(xp.where(on_x, xp.zeros_like(p), p), axis=-1)
    bracket = xp.where(stayed, away, -_at(xp, log_p, on_x1) - p_x)
    exact = bracket == 0.0
    # 0 where the bracket vanishes (an exact model), even where the weight is inf (t = 1)
    per_token = xp.where(exact, xp.zeros_like(bracket), schedule.jump(tt)) * bracket
    return _reduce(xp, per_token, reduction)

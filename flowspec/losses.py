r"""The Flow Matching regression loss (paper eq. 5, 9, 14 and 23) and its floor (Theorem 2)."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal, NamedTuple

from . import validation
from .distributed import DaskMarginal
from .marginal import EmpiricalMarginal
from .typing import Array

__all__ = ["LossFloor", "cfm_loss", "cfm_loss_floor"]

_REDUCTIONS = ("mean", "sum", "none")


def cfm_loss(v: Array, u: Array, reduction: Literal["mean", "sum", "none"] = "mean") -> Array:
    r"""The (conditional) Flow Matching loss :math:`\lVert v - u \rVert^2` per sample, reduced.

    For a model output ``v = model(t, x_t)`` at :math:`x_t = \psi_t(x_0 \mid x_1)` and
    the target ``u`` of :meth:`~flowspec.GaussianPath.target` this is the CFM loss in
    its reparameterised form, eq. 14 (eq. 23 for the OT path), a Monte Carlo estimate of
    eq. 9; with the marginal field as ``u`` it is the FM loss of eq. 5. The loss of
    one sample is the squared Euclidean norm over all event axes; the batch is reduced
    by its mean (default), its sum, or not at all.

    Parameters
    ----------
    v, u : array, shape (B, *event)
        Model output and regression target, one namespace and one floating dtype.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    array, shape () for "mean" and "sum", (B,) for "none"

    Raises
    ------
    TypeError
        Mixed namespaces or dtypes, non-floating inputs.
    ValueError
        Different shapes, a 0-d input, an unknown ``reduction``.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> v = np.array([[1.0, 2.0], [0.0, 0.0]]); u = np.zeros((2, 2))
    >>> fs.cfm_loss(v, u, reduction="none").tolist(), float(fs.cfm_loss(v, u))
    ([5.0, 0.0], 2.5)
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
    xp = validation.namespace(v=v, u=u)
    validation.check_float(xp, "v", v)
    validation.check_float(xp, "u", u, like=("v", v))
    validation.check_batch("v", v)
    validation.check_same_shape("v", v, "u", u)
    diff = v - u
    per_sample = xp.sum(xp.reshape(diff * diff, (v.shape[0], -1)), axis=1)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return xp.sum(per_sample)
    return xp.mean(per_sample)


class LossFloor(NamedTuple):
    """The CFM loss floor of :func:`cfm_loss_floor`: an estimate and its uncertainty.

    ``estimate``, ``stderr``, ``low`` and ``high`` are 0-d arrays and ``terms`` is a
    (B,) array, all in the namespace, dtype and device of the samples.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> f = fs.LossFloor(np.float64(1.0), np.float64(0.1), np.float64(0.8),
    ...                  np.float64(1.2), np.ones(3), 0.95)
    >>> float(f.estimate), f.confidence
    (1.0, 0.95)
    """

    estimate: Array
    """The sample mean of ``terms``: an unbiased estimate of the floor."""
    stderr: Array
    """The standard error of ``estimate``, ``std(terms, ddof=1) / sqrt(B)``."""
    low: Array
    """``estimate - z * stderr``, z the standard normal quantile of ``(1 + confidence) / 2``."""
    high: Array
    """``estimate + z * stderr``."""
    terms: Array
    """The per-sample terms, shape (B,)."""
    confidence: float
    """The confidence level of ``[low, high]``."""


def cfm_loss_floor(
    marginal: EmpiricalMarginal | DaskMarginal,
    x0: Array,
    x1: Array,
    t: Array | float,
    *,
    confidence: float = 0.95,
) -> LossFloor:
    r"""The least value of the CFM loss: the constant of Theorem 2, with a confidence interval.

    Theorem 2 gives :math:`\mathcal L_{\mathrm{CFM}}(\theta) = \mathcal L_{\mathrm{FM}}(\theta)
    + C` (eq. 5 and 9) with a constant :math:`C` that does not depend on the model. A
    model reaches :math:`\mathcal L_{\mathrm{FM}} = 0` only as the marginal field
    :math:`u_t` (eq. 8), so :math:`C` is the loss a perfect model reaches, the level
    at which a CFM training loss levels off:

    .. math::
        C = \mathbb E_{t,\, x_1 \sim q,\, x_0 \sim p_0}
            \big\lVert \tfrac{d}{dt}\psi_t(x_0 \mid x_1) - u_t\big(\psi_t(x_0 \mid x_1)\big)\big\rVert^2
          = \mathcal L_{\mathrm{CFM}}(u) ,

    the expected conditional variance of the regression target given :math:`x_t`.
    For the empirical data distribution :math:`q = \sum_i q_i \delta_{x_1^{(i)}}` of
    ``marginal``, :math:`u_t` is exact (:meth:`EmpiricalMarginal.velocity`), and this
    function returns the Monte Carlo estimate of :math:`C` from the caller's samples:
    the per-sample terms are :func:`cfm_loss` (``reduction="none"``) of the exact
    marginal field against the target of eq. 14 at the same points, their mean is
    unbiased, and ``[low, high]`` is the normal (central limit) confidence interval.

    Parameters
    ----------
    marginal : EmpiricalMarginal or flowspec.distributed.DaskMarginal
        The data set and its conditional path. For data in a Dask array
        (:class:`~flowspec.distributed.DaskMarginal`) the samples are NumPy arrays and
        the exact field is reduced on the cluster; draw ``x1`` as rows of the Dask array,
        e.g. ``data[np.sort(index)].compute()`` (B rows travel, not the data set).
    x0 : array, shape (B, *event)
        Samples of the source :math:`p_0 = \mathcal N(0, I)`, B >= 2, i.i.d.
    x1 : array, shape (B, *event)
        Samples of the data distribution of ``marginal``: rows of ``marginal.data``
        drawn i.i.d. with its weights (uniformly for an unweighted data set).
    t : number or array of shape () or (B,)
        The times. For the constant of Theorem 2 draw one time per sample, uniform on
        [0, 1] (on [0, 1 - eps] for a schedule whose target diverges at 1, as the
        training loss does; the floor then refers to the same distribution of t). A
        fixed time gives the floor of the loss at that time, whose integral over t is
        the constant.
    confidence : float
        The level of the confidence interval, in (0, 1).

    Returns
    -------
    LossFloor
        ``estimate``, ``stderr``, ``low``, ``high`` (0-d arrays), ``terms`` (B,) and
        ``confidence``.

    Raises
    ------
    TypeError
        ``marginal`` is not an :class:`EmpiricalMarginal`; samples of another library
        or dtype than the data; non-floating samples.
    ValueError
        ``x0`` and ``x1`` of different shapes, fewer than 2 samples, event shape other
        than the data's, ``confidence`` outside (0, 1), times outside [0, 1].

    Notes
    -----
    The terms are finite where the schedule's derivatives are finite and
    :math:`\sigma_t > 0` (see ``schedule.divergent_at`` and ``schedule.degenerate_at``);
    elsewhere they are what the arithmetic gives. The interval assumes i.i.d. samples and
    a finite variance of the terms; near a schedule's divergent endpoint the terms are
    heavy-tailed, and the interval is then optimistic.

    Examples
    --------
    One data point: the marginal field is the conditional one, and the floor is 0.

    >>> import numpy as np, flowspec as fs
    >>> rng = np.random.default_rng(0)
    >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), np.array([[1.0, 2.0]]))
    >>> x0, t = rng.standard_normal((100, 2)), rng.uniform(size=100)
    >>> x1 = np.repeat(m.data, 100, axis=0)
    >>> bool(fs.cfm_loss_floor(m, x0, x1, t).estimate < 1e-20)
    True

    At t = 0 the term is the distance of the data point from the data mean, so over the
    whole data set the floor is the data's variance (summed over coordinates):

    >>> data = rng.standard_normal((50, 2))
    >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), data)
    >>> f = fs.cfm_loss_floor(m, rng.standard_normal((50, 2)), data, 0.0)
    >>> bool(np.isclose(f.estimate, data.var(axis=0).sum()))
    True
    """
    if not isinstance(marginal, (EmpiricalMarginal, DaskMarginal)):
        raise TypeError(
            f"`marginal` must be a flowspec EmpiricalMarginal or DaskMarginal, got "
            f"{validation.describe(marginal)}"
        )
    xp = validation.namespace(x0=x0, x1=x1)
    validation.check_float(xp, "x0", x0)
    validation.check_float(xp, "x1", x1, like=("x0", x0))
    validation.check_batch("x0", x0)
    validation.check_same_shape("x0", x0, "x1", x1)
    batch = int(x0.shape[0])
    if batch < 2:
        raise ValueError(
            f"`x0` and `x1` must hold at least 2 samples for a standard error, got B = {batch}"
        )
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise TypeError(f"`confidence` must be a real number in (0, 1), got {confidence!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence!r}")
    x_t, target = marginal.path.sample_and_target(x0, x1, t)  # eq. 11 and eq. 14's target
    terms = cfm_loss(marginal.velocity(x_t, t), target, reduction="none")  # (B,)
    estimate = xp.mean(terms)
    stderr = xp.std(terms, correction=1) / math.sqrt(batch)
    z = NormalDist().inv_cdf(0.5 + 0.5 * float(confidence))
    return LossFloor(
        estimate, stderr, estimate - z * stderr, estimate + z * stderr, terms, float(confidence)
    )

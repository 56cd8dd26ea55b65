r"""The Flow Matching regression loss (paper eq. 5, 9 and 23)."""

from __future__ import annotations

from typing import Literal

from . import validation
from .typing import Array

__all__ = ["cfm_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def cfm_loss(v: Array, u: Array, reduction: Literal["mean", "sum", "none"] = "mean") -> Array:
    r"""The (conditional) Flow Matching loss :math:`\lVert v - u \rVert^2` per sample, reduced.

    For a model output ``v = model(t, x_t)`` and the target ``u`` of
    :meth:`~flowspec.GaussianPath.target` this is the CFM loss of eq. 9 (eq. 23 for the
    OT path); with the marginal field as ``u`` it is the FM loss of eq. 5. The loss of
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

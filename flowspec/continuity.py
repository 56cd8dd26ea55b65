r"""The continuity equation, checked numerically (paper eq. 26, Theorem 1).

A vector field :math:`u_t` generates a probability path :math:`p_t` when
:math:`\partial_t p_t + \nabla\cdot(p_t u_t) = 0`. Dividing by :math:`p_t > 0` gives the
log form used here, which stays well scaled where the density is tiny:

.. math:: r_t(x) = \partial_t \log p_t(x) + \nabla\cdot u_t(x) + u_t(x)\cdot\nabla_x \log p_t(x) = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import validation
from .paths import GaussianPath
from .typing import Array

__all__ = ["continuity_bound", "continuity_residual"]


def continuity_residual(
    log_prob: Callable[[Array, Array], Array],
    velocity: Callable[[Array, Array], Array],
    t: Array | float,
    x: Array,
) -> Array:
    r"""The log-form continuity residual of a (density, field) pair, by central differences.

    The continuity equation (paper eq. 26) divided by :math:`p_t > 0`; it vanishes when
    ``velocity`` generates ``log_prob`` (the premise and conclusion of Theorem 1).

    .. math:: r = \partial_t \log p_t(x) + \nabla\cdot u_t(x) + u_t(x)\cdot\nabla_x \log p_t(x)

    Every derivative is a central finite difference, with step
    :math:`h = \epsilon^{1/3}` in t and :math:`h = \epsilon^{1/3}\max(1, \lVert x\rVert_\infty)`
    per sample in x, where :math:`\epsilon` is the machine epsilon of ``x``'s dtype; the
    divided differences use the step actually represented, ``(a + h) - (a - h)``. The
    error of each term is :math:`O(\epsilon^{2/3})` times the size of the third
    derivative (truncation) and of the function (rounding): about 1e-10 relative in
    float64 and 1e-4 in float32 for well-scaled inputs. A pair that satisfies the
    continuity equation gives a residual of that size; tests compare it against the
    magnitudes of the three terms.

    It costs 2 + 2d evaluations of ``log_prob`` and 1 + 2d of ``velocity`` for d event
    entries, so it is meant for small d; the torch and JAX backends compute the same
    quantity by automatic differentiation. ``t - h`` and ``t + h`` must lie where
    ``log_prob`` is finite (for a path, inside its finite domain).

    Parameters
    ----------
    log_prob : callable
        ``log_prob(t, x) -> (B,)``, t of shape (B,) in ``x``'s namespace and dtype.
    velocity : callable
        ``velocity(t, x) -> (B, *event)``.
    t : float or array, shape () or (B,)
        Times in [0, 1].
    x : array, shape (B, *event)

    Returns
    -------
    array, shape (B,)

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> path = fs.GaussianPath(fs.CondOT(sigma_min=0.01)); x1 = np.array([[1.0, -2.0]])
    >>> lp = lambda t, x: path.log_prob(x, x1, t); u = lambda t, x: path.velocity(x, x1, t)
    >>> bool(abs(fs.continuity_residual(lp, u, 0.5, np.array([[0.3, 0.1]]))[0]) < 1e-6)
    True
    """
    for name, fn in (("log_prob", log_prob), ("velocity", velocity)):
        if not callable(fn):
            raise TypeError(
                f"`{name}` must be a callable {name}(t, x), got {validation.describe(fn)}"
            )
    xp = validation.namespace(x=x, t=t)
    validation.check_float(xp, "x", x)
    validation.check_batch("x", x)
    batch = int(x.shape[0])
    tb = xp.reshape(validation.time_array(xp, t, x), (batch,))
    eps = xp.finfo(x.dtype).eps
    cbrt_eps = float(eps) ** (1.0 / 3.0)

    def lp(tt: Array, xx: Array) -> Array:
        return validation.check_output("log_prob(t, x)", log_prob(tt, xx), xp, (batch,), x.dtype)

    def vel(tt: Array, xx: Array) -> Array:
        return validation.check_output(
            "velocity(t, x)", velocity(tt, xx), xp, tuple(x.shape), x.dtype
        )

    # d/dt log p
    t_plus, t_minus = tb + cbrt_eps, tb - cbrt_eps
    try:
        lp_plus, lp_minus = lp(t_plus, x), lp(t_minus, x)
    except ValueError as err:
        # the times t +- h are this function's, not the caller's: say so
        raise ValueError(
            f"`log_prob` rejected the shifted times t - h and t + h at which "
            f"continuity_residual differentiates it in t (finite-difference step h = "
            f"{cbrt_eps:.3g}, the cube root of the dtype's eps): `t` must lie at least h "
            f"inside the domain of `log_prob`; it said: {err}"
        ) from err
    dt_log_p = (lp_plus - lp_minus) / (t_plus - t_minus)

    # divergence and u . grad log p, one coordinate at a time
    d = validation.event_size(x)
    flat = xp.reshape(x, (batch, d))
    scale = xp.max(xp.abs(flat), axis=1)
    h = cbrt_eps * xp.where(scale > 1.0, scale, xp.ones_like(scale))
    h_col = xp.reshape(h, (batch,) + (1,) * (x.ndim - 1))
    u_flat = xp.reshape(vel(tb, x), (batch, d))
    index = xp.arange(d, device=validation.device(x))
    divergence = xp.zeros_like(tb)
    transport = xp.zeros_like(tb)
    for i in range(d):
        unit = xp.reshape(xp.astype(index == i, x.dtype), tuple(x.shape[1:]))
        step = h_col * unit
        x_plus, x_minus = x + step, x - step
        width = xp.reshape(x_plus - x_minus, (batch, d))[:, i]
        grad_i = (lp(tb, x_plus) - lp(tb, x_minus)) / width
        du = xp.reshape(vel(tb, x_plus) - vel(tb, x_minus), (batch, d))[:, i]
        divergence = divergence + du / width
        transport = transport + u_flat[:, i] * grad_i
    return dt_log_p + divergence + transport


def continuity_bound(
    path: GaussianPath, x1: np.ndarray, t: np.ndarray, x: np.ndarray, dtype: Any = np.float64
) -> np.ndarray:
    """Error bound, per sample, of :func:`~flowspec.continuity_residual` on a Gaussian path.

    The residual of an exact (density, field) pair is pure finite-difference error.
    Its model: the central difference in t with step h = eps^(1/3) errs by
    h^2/6 |f'''| (f = log p; f''' estimated with a wide stencil of step 1e-3) plus
    rounding; the x-differences of a quadratic log-density and an affine field are
    exact up to rounding, (2d + 2) eps^(2/3) times the size of the terms. A factor of
    10 covers the constants of the estimate. Evaluated in NumPy float64 from the
    path's closed forms; ``dtype`` sets eps. It is the tolerance of the continuity
    checks (paper eq. 26) of the test suite, ``flowspec check`` and the conformance kit.

    Parameters
    ----------
    path : GaussianPath
    x1, x : NumPy array, shape (B, *event)
    t : NumPy array, shape (B,)
        Times inside the path's finite domain, at least 2e-3 from where it ends.
    dtype : NumPy floating dtype
        The dtype whose machine epsilon the residual was computed with.

    Returns
    -------
    NumPy array, shape (B,)

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> from flowspec.continuity import continuity_bound
    >>> path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    >>> x1, x, t = np.array([[1.0, -2.0]]), np.array([[0.3, 0.1]]), np.array([0.5])
    >>> r = fs.continuity_residual(
    ...     lambda t, x: path.log_prob(x, x1, t), lambda t, x: path.velocity(x, x1, t), t, x
    ... )
    >>> bool(abs(r[0]) <= continuity_bound(path, x1, t, x)[0] < 1e-6)
    True
    """
    eps = float(np.finfo(dtype).eps)
    h = eps ** (1 / 3)
    wide = 1e-3

    def f(s: np.ndarray) -> np.ndarray:
        return np.asarray(path.log_prob(x, x1, np.clip(s, 0.0, 1.0)))

    third = np.abs(f(t + 2 * wide) - 2 * f(t + wide) + 2 * f(t - wide) - f(t - 2 * wide))
    third = third / (2 * wide**3)
    u = path.velocity(x, x1, t)
    axes = tuple(range(1, x.ndim))
    terms = (
        np.abs(f(t))
        + np.abs(path.divergence(x, x1, t))
        + np.abs(np.sum(u * path.score(x, x1, t), axis=axes))
        + 1.0
    )
    d = x[0].size
    return np.asarray(10.0 * (h * h / 6.0 * third + (2 * d + 2) * eps ** (2 / 3) * terms))

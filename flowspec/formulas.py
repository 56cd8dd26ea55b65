r"""The formulas of the Gaussian conditional path, as plain functions of its coefficients.

Every quantity of the conditional path :math:`p_t(x \mid x_1) = \mathcal N(x \mid
\alpha_t x_1, \sigma_t^2 I)` (paper Sec. 4) is an expression in the schedule's
coefficients at t and the arrays: it is written here once, and
:class:`~flowspec.GaussianPath`, :class:`~flowspec.EmpiricalMarginal`, the conformance
kit and every backend call these functions rather than writing it again.

These functions validate nothing: their callers have already validated and reshaped
(:meth:`flowspec.GaussianPath.prepare`, :mod:`flowspec.validation`). The
coefficients ``c`` are a :class:`~flowspec.Coefficients` whose fields are either
arrays shaped to broadcast against the batch, (B, 1, ..., 1), or Python floats for
coefficients that are constant in t (what :meth:`Schedule.coefficients
<flowspec.schedules.Schedule.coefficients>` returns on a (B, 1, ..., 1) time). The
functions that reduce over the event axes (shape (B,) results) take the namespace
``xp`` of the arrays as a keyword, resolved from ``x`` when omitted.

=============================  ===========================================================  =========
function                       value                                                        paper
=============================  ===========================================================  =========
``sample(c, x0, x1)``          :math:`\alpha_t x_1 + \sigma_t x_0`                          eq. 11
``target(c, x0, x1)``          :math:`\dot\alpha_t x_1 + \dot\sigma_t x_0`                  eq. 14, 23
``velocity(c, x, x1)``         :math:`\frac{\dot\sigma_t}{\sigma_t}(x - \alpha_t x_1) + \dot\alpha_t x_1`  eq. 15
``score(c, x, x1)``            :math:`-(x - \alpha_t x_1)/\sigma_t^2`                       eq. 10
``log_prob(c, x, x1, xp=)``    :math:`-\frac{\lVert x-\alpha_t x_1\rVert^2}{2\sigma_t^2} - d\log\sigma_t - \frac d2\log 2\pi`  eq. 10
``divergence(c, x, xp=)``      :math:`d\,\dot\sigma_t/\sigma_t`, shape (B,)                 eq. 15
=============================  ===========================================================  =========

d is the number of event entries, ``prod(x.shape[1:])``. Where :math:`\sigma_t = 0`
or a coefficient is infinite the functions return what the arithmetic gives (see each
schedule's ``degenerate_at`` and ``divergent_at``); :func:`target` has no division.

Examples
--------
>>> import numpy as np, flowspec as fs
>>> from flowspec import formulas
>>> c = fs.CondOT()(np.array([[0.25]]))        # coefficients of shape (B, 1)
>>> x0, x1 = np.array([[1.0, -1.0]]), np.array([[3.0, 5.0]])
>>> formulas.sample(c, x0, x1).tolist(), formulas.target(c, x0, x1).tolist()
([[1.5, 0.5]], [[2.0, 6.0]])
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable
from typing import Any, Literal

import array_api_compat
import numpy as np

from .schedules import Coefficients
from .typing import Array, Namespace

__all__ = [
    "KINDS",
    "Kind",
    "conversion",
    "conversion_coefficients",
    "divergence",
    "log_prob",
    "per_sample",
    "sample",
    "score",
    "target",
    "velocity",
]

_LOG_2PI = math.log(2.0 * math.pi)


def per_sample(value: Array | float, x: Array, *, xp: Namespace | None = None) -> Array:
    """A coefficient of shape (B, 1, ..., 1), or a constant, as an array of shape (B,) like ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.formulas import per_sample
    >>> per_sample(2.0, np.zeros((3, 4))).tolist(), per_sample(np.ones((2, 1)), np.zeros((2, 5))).shape
    ([2.0, 2.0, 2.0], (2,))
    """
    xp = array_api_compat.array_namespace(x) if xp is None else xp
    batch = (int(x.shape[0]),)
    if isinstance(value, float):
        return xp.full(batch, value, dtype=x.dtype, device=array_api_compat.device(x))
    return xp.reshape(value, batch)


def sample(c: Coefficients, x0: Array, x1: Array) -> Array:
    r"""The conditional flow :math:`\psi_t(x_0 \mid x_1) = \alpha_t x_1 + \sigma_t x_0` (eq. 11).

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.CondOT()(np.array([[0.5]]))
    >>> fs.formulas.sample(c, np.zeros((1, 2)), np.ones((1, 2))).tolist()
    [[0.5, 0.5]]
    """
    return c.alpha * x1 + c.sigma * x0


def target(c: Coefficients, x0: Array, x1: Array) -> Array:
    r"""The CFM target :math:`\frac{d}{dt}\psi_t(x_0 \mid x_1) = \dot\alpha_t x_1 + \dot\sigma_t x_0` (the target of eq. 14; eq. 23 for OT).

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.CondOT()(np.array([[1.0]]))
    >>> fs.formulas.target(c, np.array([[1.0]]), np.array([[3.0]])).tolist()
    [[2.0]]
    """
    return c.d_alpha * x1 + c.d_sigma * x0


def velocity(c: Coefficients, x: Array, x1: Array) -> Array:
    r"""The conditional field of Theorem 3 (eq. 15), :math:`\frac{\dot\sigma_t}{\sigma_t}(x - \alpha_t x_1) + \dot\alpha_t x_1`.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.CondOT()(np.array([[0.5]]))
    >>> fs.formulas.velocity(c, np.array([[0.5]]), np.array([[2.0]])).tolist()
    [[3.0]]
    """
    return (c.d_sigma / c.sigma) * (x - c.alpha * x1) + c.d_alpha * x1


def score(c: Coefficients, x: Array, x1: Array) -> Array:
    r"""The conditional score :math:`\nabla_x \log p_t(x \mid x_1) = -(x - \alpha_t x_1)/\sigma_t^2` (eq. 10).

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.CondOT()(np.array([[0.0]]))
    >>> fs.formulas.score(c, np.array([[2.0]]), np.zeros((1, 1))).tolist()
    [[-2.0]]
    """
    # two divisions, not one by sigma^2: sigma^2 underflows in short dtypes (float16 at
    # sigma = 1e-4) where r / sigma and the score are finite
    return -((x - c.alpha * x1) / c.sigma) / c.sigma


def log_prob(c: Coefficients, x: Array, x1: Array, *, xp: Namespace | None = None) -> Array:
    r"""The log-density of :math:`\mathcal N(x \mid \alpha_t x_1, \sigma_t^2 I)` (eq. 10), shape (B,).

    .. math::
        \log p_t(x \mid x_1) = -\frac{\lVert x - \alpha_t x_1 \rVert^2}{2\sigma_t^2}
        - d \log \sigma_t - \frac d2 \log 2\pi

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.CondOT()(np.array([[0.0]]))
    >>> lp = fs.formulas.log_prob(c, np.zeros((1, 1)), np.zeros((1, 1)))
    >>> bool(np.isclose(lp[0], -0.5 * np.log(2 * np.pi)))
    True
    """
    xp = array_api_compat.array_namespace(x) if xp is None else xp
    d = math.prod(int(s) for s in x.shape[1:])
    r = x - c.alpha * x1
    sigma = per_sample(c.sigma, x, xp=xp)
    if xp.finfo(x.dtype).bits < 32:
        # short dtypes: the standardised residual r / sigma, as sigma^2 underflows (float16
        # at sigma = 1e-4) where the log-density is finite (a static, dtype-only branch)
        z = r / c.sigma
        quad = xp.sum(xp.reshape(z * z, (x.shape[0], -1)), axis=1)
    else:
        quad = xp.sum(xp.reshape(r * r, (x.shape[0], -1)), axis=1) / (sigma * sigma)
    return -0.5 * quad - d * xp.log(sigma) - 0.5 * d * _LOG_2PI


def divergence(c: Coefficients, x: Array, *, xp: Namespace | None = None) -> Array:
    r"""The divergence :math:`\nabla_x \cdot u_t(x \mid x_1) = d\, \dot\sigma_t/\sigma_t` (eq. 15), shape (B,).

    The field of Theorem 3 is affine in x with Jacobian :math:`(\dot\sigma_t/\sigma_t) I`;
    only ``x``'s shape, dtype and device are used.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.CondOT()(np.array([[0.5]]))
    >>> fs.formulas.divergence(c, np.zeros((1, 3))).tolist()
    [-6.0]
    """
    d = math.prod(int(s) for s in x.shape[1:])
    return d * per_sample(c.d_sigma / c.sigma, x, xp=xp)


# -- conversions between parameterisations (flowspec.parameterisations) ----------------

Kind = Literal["velocity", "x1", "x0", "score"]
#: The four parameterisations, by name.
KINDS: tuple[str, ...] = ("velocity", "x1", "x0", "score")


def _check_kind(name: str, kind: Any) -> None:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"`{name}` must be one of {KINDS}, got {kind!r}")


def conversion_coefficients(c: Coefficients, source: Kind, target: Kind) -> tuple[Any, Any]:
    r"""The coefficients (a, b) of ``target = a x + b source`` at the coefficients ``c``.

    Lipman et al., 2024 (the Guide), Table 1 and Sec. 4.8, completed to the twelve
    directions between velocity, data (x1), noise (x0) and score predictions of the
    Gaussian path :math:`x_t = \alpha_t x_1 + \sigma_t x_0` (paper eq. 11); the table
    of ``flowspec.parameterisations`` lists them with where each is singular. The
    identity direction is (0, 1).

    Parameters
    ----------
    c : Coefficients
        ``schedule(t)``, each field a number or an array broadcasting against x
        (shape (B, 1, ..., 1)).
    source, target : {"velocity", "x1", "x0", "score"}

    Returns
    -------
    a, b : arrays (or numbers) like the fields of ``c``

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.CondOT()(np.array([1.0]))
    >>> a, b = fs.formulas.conversion_coefficients(c, "velocity", "x1")
    >>> a.tolist(), b.tolist()  # at t = 1 the data prediction is x itself
    ([1.0], [0.0])
    """
    _check_kind("source", source)
    _check_kind("target", target)
    al, si, dal, dsi = c
    if source == target:
        return 0.0 * al, 1.0 + 0.0 * al
    det = al * dsi - si * dal  # D_t = alpha sigma' - sigma alpha'
    table: dict[tuple[str, str], Callable[[], tuple[Any, Any]]] = {
        ("x1", "velocity"): lambda: (dsi / si, -det / si),
        ("x0", "velocity"): lambda: (dal / al, det / al),
        ("score", "velocity"): lambda: (dal / al, -(si * det) / al),
        ("velocity", "x1"): lambda: (dsi / det, -si / det),
        ("x0", "x1"): lambda: (1.0 / al, -si / al),
        ("score", "x1"): lambda: (1.0 / al, (si * si) / al),
        ("velocity", "x0"): lambda: (-dal / det, al / det),
        ("x1", "x0"): lambda: (1.0 / si, -al / si),
        ("score", "x0"): lambda: (0.0 * si, -si),
        ("velocity", "score"): lambda: (dal / (si * det), -al / (si * det)),
        ("x1", "score"): lambda: (-1.0 / (si * si), al / (si * si)),
        ("x0", "score"): lambda: (0.0 * si, -1.0 / si),
    }
    return table[(source, target)]()


def conversion(c: Coefficients, prediction: Array, x: Array, source: Kind, target: Kind) -> Array:
    r"""Convert a prediction of kind ``source`` at state ``x`` into kind ``target``.

    ``a * x + b * prediction`` with :func:`conversion_coefficients` (the Guide's
    Table 1), except that the data prediction to velocity and to score directions are
    ``velocity`` (Theorem 3, eq. 15: the marginal field of eq. 8 is the
    conditional field at the posterior mean) and ``score`` of this module. No
    validation; ``c`` must broadcast against ``x`` (fields of shape (B, 1, ..., 1), or
    numbers). :func:`flowspec.convert` is the validated entry point.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.CondOT()(np.array([[0.5]]))
    >>> x1_hat = np.array([[2.0]]); x = np.array([[0.5]])
    >>> fs.formulas.conversion(c, x1_hat, x, "x1", "velocity").tolist()
    [[3.0]]
    """
    if source == target:
        _check_kind("source", source)
        return 1.0 * prediction  # a new array: the result never aliases an input
    if source == "x1" and target == "velocity":
        return velocity(c, x, prediction)
    if source == "x1" and target == "score":
        return score(c, x, prediction)
    a, b = conversion_coefficients(c, source, target)
    xp = array_api_compat.array_namespace(x, prediction)
    with _quiet_overflow(xp):  # NumPy's overflow warning: the overflow is handled below
        out = a * x + b * prediction
    # A term can overflow where the result does not: at alpha = 2**-126 in float32,
    # (sigma / alpha) x0 is beyond the largest float for |x0| >= 4 while
    # (x - sigma x0) / alpha is not. Only there (out not finite) the result is
    # s (a/s x + b/s pred), s the power of two nearest to the larger of |a| and |b|:
    # exact scaling, which overflows only where the result does.
    big = _abs_max(xp, a, b, out)
    usable = (big > 1.0) & (big < math.inf)
    scale = xp.pow(
        2.0 * xp.ones_like(big), xp.round(xp.log2(xp.where(usable, big, 1.0 + 0.0 * big)))
    )
    scaled = scale * ((a / scale) * x + (b / scale) * prediction)
    return xp.where(xp.isfinite(out) | ~xp.isfinite(scaled), out, scaled)


def _quiet_overflow(xp: Any) -> Any:
    """NumPy's errstate without overflow warnings for NumPy-backed namespaces, else a
    no-op context (tracers such as ``torch.compile`` cannot trace warning filters)."""
    if array_api_compat.is_numpy_namespace(xp) or xp.__name__.startswith("array_api_strict"):
        return np.errstate(over="ignore")
    return contextlib.nullcontext()


def _abs_max(xp: Any, a: Any, b: Any, like: Array) -> Array:
    """max(|a|, |b|) as an array of ``like``'s dtype and device (a, b numbers or arrays)."""

    def arr(v: Any) -> Array:
        if isinstance(v, numbers.Real):
            return xp.full((), float(v), dtype=like.dtype, device=array_api_compat.device(like))
        return v

    return xp.maximum(xp.abs(arr(a)), xp.abs(arr(b)))

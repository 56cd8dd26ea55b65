r"""Post-training schedule change: the field of path B from a field trained on path A.

Two Gaussian paths (paper Sec. 4, eq. 10-11) with the same data and the same noise
differ only by a change of scale and time (Lipman et al., 2024, Sec. 4.8.2): with
the signal-to-noise ratio :math:`\rho_t = \alpha_t/\sigma_t`,

.. math::
    \bar x_r = s_r\, x_{t_r}, \qquad t_r = \rho_A^{-1}(\rho_B(r)), \qquad
    s_r = \frac{\sigma_B(r)}{\sigma_A(t_r)} = \frac{\alpha_B(r)}{\alpha_A(t_r)},

and the velocity of B is :math:`\bar u_r(x) = (\dot s_r/s_r)\, x + s_r \dot t_r\,
u_{t_r}(x/s_r)`. The map exists on all of [0, 1] when B's SNR range lies inside
A's: ``A.snr(0) <= B.snr(0)`` and ``B.snr(1) <= A.snr(1)``.

The transformation is evaluated through the predictions, not through
:math:`\dot t_r` and :math:`\dot s_r` (which are 0/0 at a degenerate end): the data
and noise predictions are the same on both paths at matching points,
:math:`\hat x_1^B(r, x) = \hat x_1^A(t_r, x/s_r)` and likewise :math:`\hat x_0`, so
:math:`\bar u_r = \dot\alpha_B(r) \hat x_1 + \dot\sigma_B(r) \hat x_0` with both
predictions obtained from A's velocity by the division-by-D conversions of
:mod:`flowspec.parameterisations`, finite at both ends. This is the same affine map
of the field as the formula above (the two agree for every (x, u), since
:math:`d/dr\,[s_r(\alpha_A x_1 + \sigma_A x_0)] = \dot\alpha_B x_1 + \dot\sigma_B x_0`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import validation
from .formulas import KINDS, Kind, conversion
from .paths import GaussianPath
from .schedules import Coefficients, Schedule
from .typing import Array, Field

__all__ = ["change_schedule", "scale_time"]


#: Relative slack on the SNR ranges' comparison: the two ratios at a shared end are
#: computed by different formulas, so they agree to a few ulps, not exactly.
_RANGE_ULPS = 16


def _schedule_of(name: str, schedule: Any) -> Schedule:
    if isinstance(schedule, GaussianPath):
        return schedule.schedule
    if isinstance(schedule, Schedule):
        return schedule
    raise TypeError(
        f"`{name}` must be a flowspec Schedule or GaussianPath, got {validation.describe(schedule)}"
    )


def _check_kind(name: str, kind: Any) -> None:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"`{name}` must be one of {KINDS}, got {kind!r}")


def _scale_time(xp: Any, source: Schedule, cb: Coefficients) -> tuple[Array, Array, Coefficients]:
    """(t_r, s_r, A's coefficients at t_r) for B's coefficients ``cb``."""
    t = source.snr_inverse(cb.alpha / cb.sigma)
    ca = source(t)
    # the two equal forms of s, each where it does not lose accuracy (and never 0/0)
    by_sigma = ca.sigma >= ca.alpha
    s = xp.where(
        by_sigma,
        cb.sigma / xp.where(by_sigma, ca.sigma, xp.ones_like(t)),
        cb.alpha / xp.where(by_sigma, xp.ones_like(t), ca.alpha),
    )
    return t, s, ca


def _check_ranges(source: Schedule, target: Schedule) -> None:
    ends = np.array([0.0, 1.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        ra = np.asarray(source.snr(ends))
        rb = np.asarray(target.snr(ends))
    slack = _RANGE_ULPS * np.finfo(np.float64).eps
    if not (rb[0] >= ra[0] * (1.0 - slack) and rb[1] <= ra[1] * (1.0 + slack)):
        raise ValueError(
            f"`target`'s SNR range [{rb[0]!r}, {rb[1]!r}] must lie inside `source`'s "
            f"[{ra[0]!r}, {ra[1]!r}]: the path of `target` at some time matches no time "
            f"of `source` (e.g. VariancePreserving never reaches SNR 0, so it cannot "
            f"serve a path that starts from pure noise)"
        )


def scale_time(
    source: Schedule | GaussianPath, target: Schedule | GaussianPath, r: Array | float
) -> tuple[Array, Array]:
    r"""The matching time and scale :math:`(t_r, s_r)` of the schedule change (Guide Sec. 4.8.2).

    :math:`t_r = \rho_A^{-1}(\rho_B(r))` and :math:`s_r = \sigma_B(r)/\sigma_A(t_r)
    = \alpha_B(r)/\alpha_A(t_r)` (each form where it is accurate), so that
    :math:`s_r x^A_{t_r}` has the law of :math:`x^B_r` for the Gaussian paths of the
    paper's Sec. 4 with the same data. ``r`` follows the rules of calling a schedule
    (a number, or a floating array of any shape, host values in [0, 1]); both results
    have its shape.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> t, s = fs.scale_time(fs.CondOT(), fs.Cosine(), np.array([0.0, 0.5, 1.0]))
    >>> np.round(t, 12).tolist(), np.round(s, 12).tolist()
    ([0.0, 0.5, 1.0], [1.0, 1.414213562373, 1.0])
    """
    a, b = _schedule_of("source", source), _schedule_of("target", target)
    _check_ranges(a, b)
    cb = b(r)
    xp = validation.namespace(r=cb.alpha)
    t, s, _ = _scale_time(xp, a, cb)
    return t, s


def change_schedule(
    field: Field,
    source: Schedule | GaussianPath,
    target: Schedule | GaussianPath,
    *,
    prediction: Kind = "velocity",
    output: Kind = "velocity",
) -> Field:
    r"""The field of path ``target`` from a ``field`` trained on path ``source`` (Guide Sec. 4.8.2).

    With :func:`scale_time`'s :math:`(t_r, s_r)`, the returned ``field_B(r, x)``
    evaluates ``field(t_r, x / s_r)``, reads it as a prediction of kind ``prediction``
    on ``source``'s path, and returns the prediction of kind ``output`` on
    ``target``'s path at (r, x): for a velocity,

    .. math:: \bar u_r(x) = \dot\alpha_B(r)\, \hat x_1 + \dot\sigma_B(r)\, \hat x_0
              = \frac{\dot s_r}{s_r} x + s_r \dot t_r\, u_{t_r}(x / s_r),

    the marginal field (paper eq. 8) of ``target``'s path whenever ``field`` is that of
    ``source``'s. Finite at both ends where the mathematics is: the velocity to
    velocity change divides only by the determinant :math:`D` of
    ``flowspec.parameterisations`` (so CondOT to Cosine is finite at r = 1);
    other kinds inherit the singularities of their conversions there.

    Parameters
    ----------
    field : callable
        ``field(t, x)`` with t of shape (B,), returning an array like x.
    source, target : Schedule or GaussianPath
        ``target``'s SNR range must lie in ``source``'s (checked here).
    prediction, output : {"velocity", "x1", "x0", "score"}
        What ``field`` predicts, and what the returned field predicts.

    Returns
    -------
    callable
        ``field_B(r, x)`` with the ``t`` rule of the contract for r.

    Raises
    ------
    ValueError
        An unknown kind; SNR ranges that do not nest.

    Examples
    --------
    The exact CondOT field of a data set, sampled as the Cosine path's field:

    >>> import numpy as np, flowspec as fs
    >>> data = np.array([[-1.0], [2.0]])
    >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), data)
    >>> u = fs.change_schedule(lambda t, x: m.velocity(x, t), fs.CondOT(), fs.Cosine())
    >>> ref = fs.EmpiricalMarginal(fs.GaussianPath(fs.Cosine()), data)
    >>> x = np.array([[0.3], [1.5]]); r = np.array([0.0, 0.6])
    >>> bool(np.allclose(u(r, x), ref.velocity(x, r), rtol=1e-13, atol=1e-13))
    True
    """
    a, b = _schedule_of("source", source), _schedule_of("target", target)
    _check_kind("prediction", prediction)
    _check_kind("output", output)
    if not callable(field):
        raise TypeError(f"`field` must be a callable field(t, x), got {validation.describe(field)}")
    _check_ranges(a, b)

    def changed(r: Any, x: Array) -> Array:
        xp = validation.namespace(r=r, x=x)
        validation.check_float(xp, "x", x)
        validation.check_batch("x", x)
        cb = b(validation.time_array(xp, r, x, name="r"))
        t, s, ca = _scale_time(xp, a, cb)
        z = x / s
        pred = validation.check_output(
            "field", field(xp.reshape(t, (int(x.shape[0]),)), z), xp, tuple(x.shape), x.dtype
        )
        prediction_b: Kind
        if prediction == "velocity":
            if output == "velocity":
                x1_hat = conversion(ca, pred, z, "velocity", "x1")
                x0_hat = conversion(ca, pred, z, "velocity", "x0")
                return cb.d_alpha * x1_hat + cb.d_sigma * x0_hat
            if output == "x1":
                return conversion(ca, pred, z, "velocity", "x1")
            pred, prediction_b = conversion(ca, pred, z, "velocity", "x0"), "x0"
        elif prediction == "score":
            pred, prediction_b = -ca.sigma * pred, "x0"  # x0_hat = -sigma_A s_A
        else:
            prediction_b = prediction  # x1_hat and x0_hat are the same on both paths
        return conversion(cb, pred, x, prediction_b, output)

    return changed

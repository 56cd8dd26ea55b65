r"""Conversions between the four parameterisations of a Gaussian path's field.

A model trained on the Gaussian path :math:`x_t = \alpha_t x_1 + \sigma_t x_0` (paper
Sec. 4, eq. 11) may predict any of four quantities at :math:`(t, x)`, all conditional
expectations given :math:`x_t = x` (Lipman et al., 2024, Sec. 4.7-4.8):

============  ======================================================================
kind          prediction
============  ======================================================================
``velocity``  :math:`v = \dot\alpha_t \hat x_1 + \dot\sigma_t \hat x_0`, the marginal field of eq. 8
``x1``        :math:`\hat x_1 = E[x_1 \mid x_t = x]`, the data prediction (a denoiser)
``x0``        :math:`\hat x_0 = E[x_0 \mid x_t = x]`, the noise prediction (epsilon)
``score``     :math:`s = \nabla \log p_t(x) = -\hat x_0 / \sigma_t`
============  ======================================================================

Two of them and x determine the rest, because :math:`x = \alpha_t \hat x_1 + \sigma_t
\hat x_0`. Every conversion is affine in the prediction for fixed (x, t):
``target = a * x + b * source`` with the coefficients of
:func:`flowspec.formulas.conversion_coefficients` (the Guide's Table 1, completed to
all twelve directions; the formulas live in :mod:`flowspec.formulas`, this module
holds the validated entry points). With
:math:`D_t = \alpha_t \dot\sigma_t - \sigma_t \dot\alpha_t` (negative for every
built-in schedule, since :math:`\dot\alpha_t \ge 0 \ge \dot\sigma_t`: a sum of two
terms of one sign, so it does not cancel):

==============  ============================  =============================  =================
source -> target  a                           b                              singular where
==============  ============================  =============================  =================
x1 -> velocity  :math:`\dot\sigma/\sigma`     :math:`-D/\sigma`              sigma = 0
x0 -> velocity  :math:`\dot\alpha/\alpha`     :math:`D/\alpha`               alpha = 0
score -> vel.   :math:`\dot\alpha/\alpha`     :math:`-\sigma D/\alpha`       alpha = 0
velocity -> x1  :math:`\dot\sigma/D`          :math:`-\sigma/D`              D = 0
x0 -> x1        :math:`1/\alpha`              :math:`-\sigma/\alpha`         alpha = 0
score -> x1     :math:`1/\alpha`              :math:`\sigma^2/\alpha`        alpha = 0
velocity -> x0  :math:`-\dot\alpha/D`         :math:`\alpha/D`               D = 0
x1 -> x0        :math:`1/\sigma`              :math:`-\alpha/\sigma`         sigma = 0
score -> x0     0                             :math:`-\sigma`                (never)
velocity -> s.  :math:`\dot\alpha/(\sigma D)` :math:`-\alpha/(\sigma D)`     sigma = 0, D = 0
x1 -> score     :math:`-1/\sigma^2`           :math:`\alpha/\sigma^2`        sigma = 0
x0 -> score     0                             :math:`-1/\sigma`              sigma = 0
==============  ============================  =============================  =================

"sigma = 0" is :attr:`Schedule.degenerate_at <flowspec.schedules.Schedule.degenerate_at>`
and "alpha = 0" is :attr:`Schedule.signal_free_at
<flowspec.schedules.Schedule.signal_free_at>`: there the mathematics itself is
singular (at sigma = 0 the data prediction is x / alpha whatever the model says, so
it carries nothing about the noise, and conversely at alpha = 0) and the functions
return what the arithmetic gives (``inf`` or ``nan``), never a clipped value. The
directions from the velocity divide only by D, so they are finite at both ends: the
data prediction of ``CondOT(0)`` at t = 1 is x, its noise prediction at t = 0 is x. A
direction that uses a derivative is also non-finite where the schedule's derivative
is (:attr:`Schedule.divergent_at <flowspec.schedules.Schedule.divergent_at>`: VP and
LinearVP at t = 1, Polynomial(n < 1) at t = 0), where ``inf / inf`` gives ``nan``,
and the directions from the velocity are singular where D = 0: at t = 0 for
Polynomial(n > 1), whose velocity there is 0 whatever the data
(:math:`\dot\alpha_0 = \dot\sigma_0 = 0`), so it determines no prediction.
"""

from __future__ import annotations

from typing import Any

from . import validation
from .formulas import KINDS, Kind, conversion
from .paths import GaussianPath
from .schedules import Schedule
from .typing import Array, Field

__all__ = ["KINDS", "Kind", "convert", "convert_field"]


def _check_kind(name: str, kind: Any) -> None:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"`{name}` must be one of {KINDS}, got {kind!r}")


def _schedule_of(schedule: Any) -> Schedule:
    if isinstance(schedule, GaussianPath):
        return schedule.schedule
    if isinstance(schedule, Schedule):
        return schedule
    raise TypeError(
        f"`schedule` must be a flowspec Schedule or GaussianPath, got {validation.describe(schedule)}"
    )


def convert(
    schedule: Schedule | GaussianPath,
    prediction: Array,
    x: Array,
    t: Array | float,
    *,
    source: Kind,
    target: Kind,
) -> Array:
    r"""Convert a model's prediction between velocity, data, noise and score (Sec. 4).

    For the Gaussian path of ``schedule`` (paper eq. 10-11),

    .. math::
        x = \alpha_t \hat x_1 + \sigma_t \hat x_0, \qquad
        v = \dot\alpha_t \hat x_1 + \dot\sigma_t \hat x_0, \qquad
        s = -\hat x_0 / \sigma_t,

    so each kind is an affine function of any other (Guide Table 1; the module
    docstring tabulates all twelve directions and where each is singular).

    Parameters
    ----------
    schedule : Schedule or GaussianPath
    prediction : array, shape (B, *event)
        The model's output, of kind ``source``.
    x : array, shape (B, *event)
        The state x_t the prediction was made at.
    t : float or array, shape () or (B,) or (B, 1, ..., 1)
        Times in [0, 1]; reshaped to (B, 1, ..., 1) explicitly.
    source, target : {"velocity", "x1", "x0", "score"}

    Returns
    -------
    array, shape (B, *event), in the namespace, dtype and device of ``x``

    Raises
    ------
    TypeError
        Mixed libraries or dtypes, a non-floating array, a schedule of another type.
    ValueError
        An unknown kind, mismatched shapes, a ``t`` of the wrong shape, host times
        outside [0, 1].

    Examples
    --------
    A denoiser's output as a velocity, and back (``CondOT(0)``, t = 1 included):

    >>> import numpy as np, flowspec as fs
    >>> x = np.array([[0.5], [2.0]]); x1_hat = np.array([[2.0], [2.0]])
    >>> v = fs.convert(fs.CondOT(), x1_hat, x, np.array([0.5, 0.9]), source="x1", target="velocity")
    >>> np.round(v, 12).tolist()
    [[3.0], [0.0]]
    >>> fs.convert(fs.CondOT(), np.array([[7.0]]), np.array([[2.0]]), 1.0, source="velocity", target="x1").tolist()
    [[2.0]]
    """
    sched = _schedule_of(schedule)
    _check_kind("source", source)
    _check_kind("target", target)
    _, c = GaussianPath(sched).prepare("x", x, "prediction", prediction, t)
    return conversion(c, prediction, x, source, target)


def convert_field(
    field: Field,
    schedule: Schedule | GaussianPath,
    *,
    source: Kind,
    target: Kind,
) -> Field:
    r"""The field ``(t, x) -> convert(schedule, field(t, x), x, t, ...)`` (Sec. 4, Guide Table 1).

    Turns a trained denoiser (``source="x1"``), noise predictor (``"x0"``) or score
    model into the velocity field that :func:`~flowspec.euler` and
    :func:`~flowspec.integrate` sample (the marginal field of the paper's eq. 8),
    or any kind into any other. ``field(t, x)`` is called with t of shape (B,) in x's
    namespace and dtype, as in training, and must return an array like ``x``.

    Examples
    --------
    The exact denoiser of a one-point data set, sampled as a velocity:

    >>> import numpy as np, flowspec as fs
    >>> m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), np.array([[3.0]]))
    >>> v = fs.convert_field(lambda t, x: m.denoise(x, t), fs.CondOT(), source="x1", target="velocity")
    >>> np.round(fs.euler(v, np.array([[0.0], [-1.0]]), steps=10), 12).tolist()
    [[3.0], [3.0]]
    """
    sched = _schedule_of(schedule)
    _check_kind("source", source)
    _check_kind("target", target)
    if not callable(field):
        raise TypeError(f"`field` must be a callable field(t, x), got {validation.describe(field)}")

    def converted(t: Any, x: Array) -> Array:
        xp = validation.namespace(t=t, x=x)
        validation.check_float(xp, "x", x)
        validation.check_batch("x", x)
        tt = validation.time_array(xp, t, x)
        out = validation.check_output(
            "field", field(xp.reshape(tt, (int(x.shape[0]),)), x), xp, tuple(x.shape), x.dtype
        )
        return conversion(sched.coefficients(xp, tt), out, x, source, target)

    return converted

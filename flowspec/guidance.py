r"""Classifier-free guidance as a field combinator.

Given a conditional and an unconditional field of one Gaussian path (paper Sec. 4;
both trained as in eq. 9, with and without the condition), classifier-free guidance
samples the combination :math:`(1 + w)\, v_{\text{cond}} - w\, v_{\text{uncond}}`
(Ho and Salimans, "Classifier-Free Diffusion Guidance", 2022, arXiv:2207.12598,
written for the velocity).

It commutes with every conversion of :mod:`flowspec.parameterisations`: a conversion
is affine in the prediction for fixed (x, t), ``a x + b p``, and the guidance weights
sum to one, so guiding data predictions and converting gives the guided velocity,
and so on. (It commutes with :func:`~flowspec.change_schedule` for the same reason.)

For 1-D Gaussian data, conditional :math:`\mathcal N(\mu_c, \tau_c^2)` and
unconditional :math:`\mathcal N(\mu_u, \tau_u^2)`, on a path from N(0, 1) at t = 0
(:math:`\alpha_0 = 0, \sigma_0 = 1`) to the data at t = 1 (:math:`\alpha_1 = 1,
\sigma_1 = 0`), both marginals are Gaussian with variance
:math:`V(t) = \alpha_t^2 \tau^2 + \sigma_t^2` and their fields are affine in x with
slope :math:`\dot V / (2V)`. The guided field is affine too, so it moves N(0, 1) to a
Gaussian whose standard deviation solves :math:`\dot{sd} = [(1+w) \dot V_c/(2V_c) -
w \dot V_u/(2 V_u)]\, sd`:

.. math:: sd_1^2 = V_c(1)^{1+w}\, V_u(1)^{-w} = \tau_c^{2(1+w)} / \tau_u^{2w}.

Guidance with w > 0 sharpens the conditional law by the factor
:math:`(\tau_c/\tau_u)^{w}` in standard deviation when :math:`\tau_c < \tau_u`. When
:math:`\tau_c = \tau_u` the slopes cancel and the guided field is the field of the
data law :math:`\mathcal N((1 + w)\mu_c - w \mu_u, \tau_c^2)`: a shift of the mean.
"""

from __future__ import annotations

from typing import Any

from . import validation
from .typing import Array, Field

__all__ = ["guided_field"]


def guided_field(cond: Field, uncond: Field, w: float) -> Field:
    r"""Classifier-free guidance: the field :math:`(1 + w) v_{cond} - w v_{uncond}` (Sec. 4).

    Combines two fields of the same Gaussian path (paper Sec. 4, eq. 8 marginal
    fields, conditional and unconditional) of any one parameterisation (the combination
    commutes with the conversions, see the module docstring). ``w = 0`` is the
    conditional field; ``w = -1`` the unconditional one.

    Parameters
    ----------
    cond, uncond : callable
        ``field(t, x)`` -> array like x.
    w : float
        The guidance weight (finite).

    Returns
    -------
    callable
        ``field(t, x)``; both inputs are called once per evaluation.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> g = fs.guided_field(lambda t, x: x + 1.0, lambda t, x: x, w=2.0)
    >>> g(np.array([0.5]), np.array([[1.0]])).tolist()
    [[4.0]]
    """
    weight = validation.real_number("w", w)
    for name, f in (("cond", cond), ("uncond", uncond)):
        if not callable(f):
            raise TypeError(
                f"`{name}` must be a callable field(t, x), got {validation.describe(f)}"
            )

    def guided(t: Any, x: Array) -> Array:
        xp = validation.namespace(t=t, x=x)
        validation.check_float(xp, "x", x)
        shape = tuple(x.shape)
        vc = validation.check_output("cond", cond(t, x), xp, shape, x.dtype)
        vu = validation.check_output("uncond", uncond(t, x), xp, shape, x.dtype)
        return (1.0 + weight) * vc - weight * vu

    return guided

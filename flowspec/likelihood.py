r"""Log-likelihood by the instantaneous change of variables (paper Sec. 2, eq. 1-2; App. C).

Along a trajectory of the flow, :math:`\frac{d}{dt}\log p_t(x_t) = -\nabla\cdot u_t(x_t)`, so

.. math:: \log p_1(x_1) = \log p_0(x_0) + \int_1^0 \nabla\cdot u_t(x_t)\, dt,

where :math:`x_t` solves :math:`\dot x_t = u_t(x_t)` backwards from :math:`x_1` at t = 1 to
:math:`x_0` at t = 0. The state :math:`x` and the running integral are advanced together,
as one augmented ODE, by the same fixed-step solvers as :func:`flowspec.integrate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import validation
from .ode import Method, check_state, grid_times, step
from .tableaus import tableau
from .typing import Array

__all__ = ["log_likelihood"]


def log_likelihood(
    field: Callable[[Array, Array], Array],
    x1: Array,
    log_p0: Callable[[Array], Array],
    time_grid: Any,
    method: Method = "euler",
    divergence: Callable[[Array, Array], Array] | None = None,
) -> Array:
    r"""The log-density of samples under the flow of ``field`` (paper App. C), shape (B,).

    Integrates the augmented ODE

    .. math:: \frac{d}{dt}\begin{pmatrix} x \\ a \end{pmatrix}
              = \begin{pmatrix} u_t(x) \\ \nabla\cdot u_t(x) \end{pmatrix},
              \qquad x(t_0) = x_1,\ a(t_0) = 0,

    over ``time_grid`` (from :math:`t_0 = 1` down to :math:`t_K = 0`) and returns
    :math:`\log p_0(x(t_K)) + a(t_K)`, i.e. :math:`\log p_0(x_0) - \int_0^1 \nabla\cdot
    u_t(x_t)\, dt`. The error is that of ``method`` (order 1, 2, 2, 4 for euler,
    midpoint, heun, rk4) in the largest step.

    Parameters
    ----------
    field : callable
        ``field(t, x)`` with t of shape (B,), returning x's shape, namespace and dtype.
    x1 : array, shape (B, *event)
        The samples whose log-likelihood is wanted (at the grid's first time).
    log_p0 : callable
        ``log_p0(x) -> (B,)``: the log-density at the grid's last time (the source,
        e.g. the standard normal).
    time_grid : sequence of float, NumPy array, or 1-D array of x1's namespace
        At least two times, strictly decreasing, inside [0, 1]; for the likelihood of
        data it runs from 1 down to 0 (a grid [t_a, ..., t_b] gives
        :math:`\log p_{t_a}` from :math:`\log p_{t_b}` = ``log_p0``, e.g. t_a = 1 - 1e-5
        for a schedule whose derivative diverges at 1). Host grids are validated; a grid
        on a device (or traced) is used as given, its values never read.
    method : {"euler", "midpoint", "heun", "rk4"}
    divergence : callable
        ``divergence(t, x) -> (B,)``, the divergence of ``field``. Required in the core
        (it has no autodiff); the torch and JAX backends also accept a name.

    Returns
    -------
    array, shape (B,)

    Raises
    ------
    TypeError
        A non-callable ``field``, ``log_p0`` or ``divergence``; callables that return
        the wrong shape, dtype or namespace.
    ValueError
        An unknown ``method``; a host grid that is not strictly decreasing within [0, 1].

    Examples
    --------
    The field :math:`u_t(x) = x` maps N(0, 1) at t = 0 to N(0, e^2) at t = 1:

    >>> import numpy as np, flowspec as fs
    >>> log_n = lambda x: -0.5 * x[:, 0] ** 2 - 0.5 * np.log(2 * np.pi)
    >>> x1 = np.array([[0.5]]); grid = np.linspace(1.0, 0.0, 9)
    >>> lp = fs.log_likelihood(lambda t, x: x, x1, log_n, grid, method="rk4",
    ...                        divergence=lambda t, x: np.ones(x.shape[0]))
    >>> exact = -0.5 * (0.5 / np.e) ** 2 - 0.5 * np.log(2 * np.pi) - 1.0
    >>> bool(abs(lp[0] - exact) < 1e-6)
    True
    """
    if isinstance(divergence, str):
        raise TypeError(
            f"`divergence` must be a callable divergence(t, x) in the core (names such as "
            f"{divergence!r} are understood by the torch and JAX backends), got {divergence!r}"
        )
    if not callable(log_p0):
        raise TypeError(f"`log_p0` must be a callable, got {validation.describe(log_p0)}")
    if divergence is None or not callable(divergence):
        raise TypeError(f"`divergence` must be a callable, got {validation.describe(divergence)}")
    tableau(method)
    xp = check_state(field, x1, method, name="x1")
    grid = grid_times(xp, time_grid, x1, x_name="x1")
    if isinstance(grid[0], float):
        validation.check_data_to_noise("time_grid", grid[0], grid[-1], time_grid)

    batch = int(x1.shape[0])
    shape = tuple(x1.shape)
    size = validation.event_size(x1)

    def augmented(t: Array, z: Array) -> Array:
        x = xp.reshape(z[:, :size], shape)
        u = validation.check_output("field(t, x)", field(t, x), xp, shape, x1.dtype)
        div = validation.check_output("divergence(t, x)", divergence(t, x), xp, (batch,), x1.dtype)
        return xp.concat([xp.reshape(u, (batch, size)), div[:, None]], axis=1)

    flat = xp.reshape(x1, (batch, size))
    z = xp.concat([flat, xp.zeros_like(flat[:, :1])], axis=1)
    for k in range(len(grid) - 1):
        z = step(augmented, xp, method, grid[k], grid[k + 1] - grid[k], z)
    x0 = xp.reshape(z[:, :size], shape)
    lp0 = validation.check_output("log_p0(x)", log_p0(x0), xp, (batch,), x1.dtype)
    return lp0 + z[:, size]

r"""Fixed-step ODE solvers for sampling :math:`\frac{d}{dt} x_t = v_t(x_t)` (paper Sec. 2 and 6).

The paper samples by integrating the learned field from noise (t = 0) to data (t = 1).
:func:`euler` is its rule exactly; :func:`integrate` runs any of four explicit
Runge-Kutta methods over an explicit, increasing or decreasing, time grid; each
method is a Butcher tableau of :data:`flowspec.tableaus.TABLEAUS`.

A field is a callable ``field(t, x)`` with ``t`` of shape (B,) in the namespace and
dtype of ``x``, as in training (``model(t, x_t)``); it must return an array of
``x``'s shape, namespace and dtype.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import array_api_compat

from . import validation
from .tableaus import TABLEAUS, fraction, tableau, weighted_sum
from .typing import Array, Field

__all__ = ["METHODS", "check_state", "euler", "grid_times", "integrate", "step"]

#: A method name: a key of :data:`flowspec.tableaus.TABLEAUS`.
Method = str


class _Orders(Mapping[str, int]):
    """Method name -> order of accuracy, read from the tableaus (one source)."""

    def __getitem__(self, name: str) -> int:
        return TABLEAUS[name].order

    def __iter__(self) -> Iterator[str]:
        return iter(TABLEAUS)

    def __len__(self) -> int:
        return len(TABLEAUS)

    def __repr__(self) -> str:
        return repr(dict(self))


#: Method name -> order of accuracy: a read-only view of :data:`flowspec.tableaus.TABLEAUS`.
METHODS: Mapping[str, int] = _Orders()


def _call(field: Field, xp: Any, t: Any, x: Array) -> Array:
    """Evaluate ``field`` at the (B,) time ``t`` (a float or a 0-d array) and check it."""
    batch = (int(x.shape[0]),)
    if isinstance(t, float):
        tb = xp.full(batch, t, dtype=x.dtype, device=validation.device(x))
    else:
        tb = xp.broadcast_to(xp.reshape(t, (1,)), batch)
    return validation.check_output("field(t, x)", field(tb, x), xp, tuple(x.shape), x.dtype)


def step(field: Field, xp: Any, method: str, t: Any, h: Any, x: Array) -> Array:
    """One step of ``method`` from (t, x) with step h (floats or 0-d arrays of ``xp``).

    The seam of every loop over a grid (:func:`integrate`, the likelihood's augmented
    system): ``field`` is evaluated at (B,) times and its output checked. Inputs are
    not validated here (see :func:`check_state` and :func:`grid_times`).

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.ode import check_state, step
    >>> field, x = (lambda t, x: -x), np.ones((1, 1))
    >>> xp = check_state(field, x, "euler")
    >>> step(field, xp, "euler", 0.0, 0.5, x).tolist()
    [[0.5]]
    """
    tab = tableau(method)
    ks = [_call(field, xp, t, x)]
    for c, row in zip(tab.c, tab.a, strict=True):
        stage = x + fraction(h, row.factor) * weighted_sum(row.weights, ks)
        ks.append(_call(field, xp, t + fraction(h, c), stage))
    return x + fraction(h, tab.b.factor) * weighted_sum(tab.b.weights, ks)


def check_state(field: Any, x0: Any, method: str, name: str = "x0") -> Any:
    """Validate a solver's field, initial state ``x0`` (named ``name``) and method name.

    Returns the namespace of ``x0``.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.ode import check_state
    >>> check_state(lambda t, x: x, np.zeros((2, 1)), "rk4").__name__
    'array_api_compat.numpy'
    >>> check_state(lambda t, x: x, np.zeros((2, 1)), "rk5")
    Traceback (most recent call last):
    ...
    ValueError: `method` must be one of ('euler', 'midpoint', 'heun', 'rk4'), got 'rk5'
    """
    if not callable(field):
        raise TypeError(f"`field` must be a callable field(t, x), got {validation.describe(field)}")
    tableau(method)
    xp = validation.namespace(**{name: x0})
    validation.check_float(xp, name, x0)
    validation.check_batch(name, x0)
    return xp


def euler(
    field: Field,
    x0: Array,
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    return_path: bool = False,
) -> Array:
    r"""The paper's Euler sampler :math:`x_{k+1} = x_k + h\, v(t_k, x_k)`.

    Solves the flow ODE of eq. 1, :math:`\frac{d}{dt}\phi_t(x) = v_t(\phi_t(x))`, with the
    forward Euler rule, from noise at ``t0 = 0`` to data at ``t1 = 1`` by default.

    With :math:`h = (t_1 - t_0)/\text{steps}` and :math:`t_k = t_0 + k h` exactly (the
    times are computed from k, never accumulated).

    Parameters
    ----------
    field : callable
        ``field(t, x)``, t of shape (B,).
    x0 : array, shape (B, *event)
        The initial state at ``t0``.
    steps : int
        Number of steps, >= 1.
    t0, t1 : float
        Start and end times; ``t1 < t0`` integrates backwards.
    return_path : bool
        If true, return all ``steps + 1`` states stacked on a new leading axis.

    Returns
    -------
    array, shape (B, *event), or (steps + 1, B, *event) with return_path

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> fs.euler(lambda t, x: np.ones_like(x), np.zeros((2, 1)), steps=4).tolist()
    [[1.0], [1.0]]
    """
    xp = check_state(field, x0, "euler")
    times, h = validation.euler_times(steps, t0, t1)
    x = x0
    states = [x0]
    for t in times:
        x = step(field, xp, "euler", t, h, x)
        if return_path:
            states.append(x)
    return xp.stack(states, axis=0) if return_path else x


def grid_times(xp: Any, time_grid: Any, x0: Array, x_name: str = "x0") -> list[Any]:
    """A solver's ``time_grid`` as a list of Python floats (host grids, validated) or of 0-d arrays.

    Host grids (sequences, NumPy arrays) are validated by value
    (:func:`flowspec.validation.host_grid`); a grid of ``x0``'s namespace is checked
    by shape and dtype only and split into 0-d arrays, its values never read.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.ode import grid_times
    >>> grid_times(np, [0, 0.5, 1], np.zeros((1, 1)))
    [0.0, 0.5, 1.0]
    """
    if array_api_compat.is_array_api_obj(time_grid) and not array_api_compat.is_numpy_array(
        time_grid
    ):
        if array_api_compat.array_namespace(time_grid) is not xp:
            raise TypeError(
                f"`time_grid` must be a sequence of numbers, a NumPy array or an array of "
                f"the namespace of `{x_name}`, got {validation.describe(time_grid)}"
            )
        validation.check_float(xp, "time_grid", time_grid, like=(x_name, x0))
        if time_grid.ndim != 1 or time_grid.shape[0] < 2:
            raise ValueError(
                f"`time_grid` must be 1-D with at least 2 times, got shape {tuple(time_grid.shape)}"
            )
        return [time_grid[k] for k in range(int(time_grid.shape[0]))]
    grid = validation.host_grid("time_grid", time_grid)
    return [float(v) for v in grid]


def integrate(
    field: Field, x0: Array, time_grid: Any, method: Method = "euler", return_path: bool = False
) -> Array:
    r"""Integrate :math:`\dot x = v(t, x)` over an explicit time grid with a fixed-step method.

    The flow ODE of eq. 1 (sampling, increasing grid) or, on a grid from 1 down to 0,
    the backward pass of the likelihood computation of App. C.

    ``method`` is ``"euler"`` (order 1), ``"midpoint"`` (explicit midpoint, order 2),
    ``"heun"`` (explicit trapezoid, order 2) or ``"rk4"`` (classical Runge-Kutta,
    order 4). An increasing grid integrates from noise to data; a decreasing one
    (e.g. from 1 down to 0) from data to noise.

    Parameters
    ----------
    field : callable
        ``field(t, x)``, t of shape (B,).
    x0 : array, shape (B, *event)
        The state at ``time_grid[0]``.
    time_grid : sequence of float, NumPy array, or 1-D array of x0's namespace
        At least two strictly monotone times. Host grids are validated; a grid on a
        device (or traced) is used as given, its values never read.
    method : {"euler", "midpoint", "heun", "rk4"}
    return_path : bool
        If true, return the state at every grid point, stacked on a new leading axis.

    Returns
    -------
    array, shape (B, *event), or (len(time_grid), B, *event) with return_path

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> x = fs.integrate(lambda t, x: -x, np.ones((1, 1)), np.linspace(0, 1, 11), method="rk4")
    >>> bool(abs(float(x[0, 0]) - np.exp(-1.0)) < 1e-6)  # rk4: error ~ h^4 / 120
    True
    """
    xp = check_state(field, x0, method)
    grid = grid_times(xp, time_grid, x0)
    x = x0
    states = [x0]
    for k in range(len(grid) - 1):
        x = step(field, xp, method, grid[k], grid[k + 1] - grid[k], x)
        if return_path:
            states.append(x)
    return xp.stack(states, axis=0) if return_path else x

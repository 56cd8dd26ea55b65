r"""The JAX backend: the reference's definitions, traceable, with autodiff and compiled loops.

Every function takes and returns JAX arrays and works inside ``jax.jit``, under
``jax.vmap`` and with ``jax.grad``: validation reads only shapes, dtypes and host values
(Python numbers, NumPy or list time grids), never a traced or device value. Names and
signatures follow the core (``import flowspec as fs``); a path method becomes a function
that takes the path first, e.g. ``sample_and_target(path, x0, x1, t)``.

What the backend adds to the core:

- :func:`euler` and :func:`integrate` compile one step and run it with
  ``jax.lax.scan`` (compile time does not grow with the number of steps), and are
  reverse-mode differentiable through the whole trajectory;
- :func:`divergence` by forward-mode autodiff (exact, or Hutchinson's estimator),
  :func:`continuity_residual` with every derivative by autodiff, and
  :func:`log_likelihood` as one augmented scan from data (t = 1) to noise (t = 0);
- :func:`sample_time` and :func:`sample_noise` driven by ``jax.random`` keys.

The schedule coefficients come from the core's schedules
(``schedule.arrays(jax.numpy, t)``) and every path quantity from the core's
:mod:`flowspec.formulas`; nothing here re-derives a formula.

Examples
--------
>>> import jax, jax.numpy as jnp, flowspec as fs
>>> fj = fs.backends.get("jax")
>>> path = fs.GaussianPath(fs.CondOT())
>>> x1 = jnp.ones((4, 2), dtype=jnp.float32)
>>> k_t, k_n = jax.random.split(jax.random.key(0))
>>> t, x0 = fj.sample_time(k_t, x1), fj.sample_noise(k_n, x1)
>>> x_t, u = jax.jit(lambda x0, x1, t: fj.sample_and_target(path, x0, x1, t))(x0, x1, t)
>>> bool(jnp.allclose(u, x1 - x0))
True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, Literal

import array_api_compat
import jax
import jax.numpy as jnp
import numpy as np

from .. import formulas, validation
from .. import losses as _losses
from .. import marginal as _mg
from ..ode import METHODS
from ..paths import GaussianPath
from ..schedules import Coefficients
from ..tableaus import fraction, tableau, weighted_sum
from ..typing import Array, Field

__all__ = [
    "METHODS",
    "cfm_loss",
    "continuity_residual",
    "coupled_sample_and_target",
    "divergence",
    "entropic_pairs",
    "euler",
    "integrate",
    "log_likelihood",
    "log_prob",
    "marginal",
    "riemannian_divergence",
    "riemannian_log_likelihood",
    "riemannian_source",
    "sample",
    "sample_and_target",
    "sample_noise",
    "sample_time",
    "score",
    "sharded_marginal",
    "sinkhorn",
    "target",
    "velocity",
]

Method = str

#: Coordinates of the exact divergence evaluated together (memory O(chunk * B * D)).
_EXACT_CHUNK = 64


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def _check_jax(name: str, x: Any) -> None:
    if not array_api_compat.is_jax_array(x):
        raise TypeError(
            f"`{name}` must be a JAX array (the JAX backend converts nothing), got "
            f"{validation.describe(x)}"
        )


def _check_state(name: str, x: Any) -> None:
    _check_jax(name, x)
    validation.check_float(jnp, name, x)
    validation.check_batch(name, x)


def _time(t: Any, x: Array, name: str = "t", x_name: str = "x") -> Array:
    """``t`` as a (B, 1, ..., 1) array of ``x``'s dtype: :func:`flowspec.validation.time_array`.

    With the placement policy ``device=None``: a Python number becomes a constant
    created without a device argument, so that under ``jax.jit`` it follows ``x``'s
    sharding. An array must be a JAX array.
    """
    if not isinstance(t, bool) and array_api_compat.is_array_api_obj(t):
        _check_jax(name, t)
    return validation.time_array(jnp, t, x, name=name, x_name=x_name, device=None)


def _check_path(path: Any) -> None:
    if not isinstance(path, GaussianPath):
        raise TypeError(
            f"`path` must be a flowspec GaussianPath (e.g. fs.GaussianPath(fs.CondOT())), "
            f"got {validation.describe(path)}"
        )


def _prepare(path: Any, a_name: str, a: Any, b_name: str, b: Any, t: Any) -> Coefficients:
    _check_path(path)
    _check_state(a_name, a)
    _check_jax(b_name, b)
    validation.check_float(jnp, b_name, b, like=(a_name, a))
    validation.check_same_shape(a_name, a, b_name, b)
    return path.schedule.arrays(jnp, _time(t, a, x_name=a_name))


def _per_sample(x: Array) -> Array:
    """(B, 1, ..., 1) -> (B,)."""
    return jnp.reshape(x, (x.shape[0],))


# --------------------------------------------------------------------------------------
# the Gaussian conditional path, as functions of (path, ...)
# --------------------------------------------------------------------------------------
def sample(path: GaussianPath, x0: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.sample`: :math:`x_t = \alpha_t x_1 + \sigma_t x_0` (eq. 11).

    Examples
    --------
    >>> import jax.numpy as jnp, flowspec as fs
    >>> fj = fs.backends.get("jax")
    >>> fj.sample(fs.GaussianPath(fs.CondOT()), jnp.zeros((1, 2)), jnp.ones((1, 2)), 0.5).tolist()
    [[0.5, 0.5]]
    """
    c = _prepare(path, "x0", x0, "x1", x1, t)
    return formulas.sample(c, x0, x1)


def target(path: GaussianPath, x0: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.target`: :math:`\dot\alpha_t x_1 + \dot\sigma_t x_0` (the target of eq. 14; eq. 23 for OT)."""
    c = _prepare(path, "x0", x0, "x1", x1, t)
    return formulas.target(c, x0, x1)


def sample_and_target(
    path: GaussianPath, x0: Array, x1: Array, t: Array | float
) -> tuple[Array, Array]:
    r""":meth:`flowspec.GaussianPath.sample_and_target`: ``(x_t, target)`` with one schedule call."""
    c = _prepare(path, "x0", x0, "x1", x1, t)
    return formulas.sample(c, x0, x1), formulas.target(c, x0, x1)


def velocity(path: GaussianPath, x: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.velocity`, Theorem 3 (eq. 15):
    :math:`\frac{\dot\sigma_t}{\sigma_t}(x - \alpha_t x_1) + \dot\alpha_t x_1`."""
    c = _prepare(path, "x", x, "x1", x1, t)
    return formulas.velocity(c, x, x1)


def log_prob(path: GaussianPath, x: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.log_prob`: :math:`\log \mathcal N(x \mid \alpha_t x_1, \sigma_t^2 I)`, shape (B,)."""
    c = _prepare(path, "x", x, "x1", x1, t)
    return formulas.log_prob(c, x, x1, xp=jnp)


def score(path: GaussianPath, x: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.score`: :math:`-(x - \alpha_t x_1)/\sigma_t^2`."""
    c = _prepare(path, "x", x, "x1", x1, t)
    return formulas.score(c, x, x1)


def _path_divergence(path: GaussianPath, x: Array, x1: Array, t: Array | float) -> Array:
    c = _prepare(path, "x", x, "x1", x1, t)
    return formulas.divergence(c, x, xp=jnp)


def cfm_loss(v: Array, u: Array, reduction: Literal["mean", "sum", "none"] = "mean") -> Array:
    r""":func:`flowspec.cfm_loss` on JAX arrays: :math:`\lVert v - u \rVert^2` per sample, reduced.

    Examples
    --------
    >>> import jax.numpy as jnp, flowspec as fs
    >>> fj = fs.backends.get("jax")
    >>> float(fj.cfm_loss(jnp.array([[1.0, 2.0], [0.0, 0.0]]), jnp.zeros((2, 2))))
    2.5
    """
    _check_jax("v", v)
    _check_jax("u", u)
    return _losses.cfm_loss(v, u, reduction=reduction)


# --------------------------------------------------------------------------------------
# random helpers
# --------------------------------------------------------------------------------------
def _check_key(key: Any, name: str = "key") -> None:
    if key is None:
        raise TypeError(f"`{name}` must be a jax.random key (jax.random.key(seed)), got None")
    if not array_api_compat.is_jax_array(key):
        raise TypeError(f"`{name}` must be a jax.random key, got {validation.describe(key)}")


def sample_time(
    key: Array,
    like: Array | int,
    *,
    low: float = 0.0,
    high: float = 1.0,
    dtype: Any = None,
) -> Array:
    r"""Times :math:`t \sim \mathcal U[\text{low}, \text{high})`, one per sample, shape (B,).

    The paper trains on :math:`t \sim \mathcal U[0, 1]` (eq. 5 and 9);
    for schedules that are singular at t = 1 (VP, LinearVP) pass ``high = 1 - eps``.

    Parameters
    ----------
    key : jax.random key
    like : array of shape (B, *event), or int B
        The batch whose times are drawn; an array also fixes the dtype.
    low, high : float
        0 <= low < high <= 1.
    dtype : floating dtype, optional
        Defaults to ``like``'s dtype, or JAX's default float for an int ``like``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, flowspec as fs
    >>> t = fs.backends.get("jax").sample_time(jax.random.key(0), jnp.zeros((3, 2)))
    >>> t.shape, bool(jnp.all((t >= 0) & (t < 1)))
    ((3,), True)
    """
    _check_key(key)
    batch, dtype = _batch_and_dtype(like, dtype)
    low = validation.real_number("low", low)
    high = validation.real_number("high", high)
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(
            f"`low` and `high` must satisfy 0 <= low < high <= 1, got {low!r}, {high!r}"
        )
    # rounding a draw to a short dtype can give `high` itself or a value below `low`:
    # clip to the dtype's values in [low, high) (a ValueError if there are none)
    lo, hi = validation.representable_interval(low, high, dtype)  # host NumPy: traceable
    t = jax.random.uniform(key, (batch,), dtype=dtype, minval=low, maxval=high)
    return jnp.clip(t, lo, hi)


def sample_noise(key: Array, like: Array) -> Array:
    r"""Source samples :math:`x_0 \sim \mathcal N(0, I)` with the shape and dtype of ``like``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, flowspec as fs
    >>> fs.backends.get("jax").sample_noise(jax.random.key(0), jnp.zeros((3, 2))).shape
    (3, 2)
    """
    _check_key(key)
    _check_state("like", like)
    return jax.random.normal(key, like.shape, dtype=like.dtype)


def _batch_and_dtype(like: Any, dtype: Any) -> tuple[int, Any]:
    if isinstance(like, numbers.Integral) and not isinstance(like, bool):
        if like < 1:
            raise ValueError(f"`like` as a batch size must be >= 1, got {like!r}")
        batch = int(like)
        dtype = jnp.zeros((), dtype=dtype).dtype if dtype is not None else jnp.result_type(float)
    else:
        _check_state("like", like)
        batch = int(like.shape[0])
        dtype = like.dtype if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype!r}")
    return batch, dtype


# --------------------------------------------------------------------------------------
# solvers on lax.scan
# --------------------------------------------------------------------------------------
def _call(field: Field, t: Array, x: Array) -> Array:
    """``field`` at the 0-d time ``t`` broadcast to (B,), its output checked (at trace time)."""
    tb = jnp.broadcast_to(t, (x.shape[0],))
    return validation.check_output("field(t, x)", field(tb, x), jnp, tuple(x.shape), x.dtype)


def _rk_step(f: Callable[[Array, Any], Any], method: str, s: dict[str, Array], x: Any) -> Any:
    """One step of ``method``'s tableau on a pytree state; ``s`` holds the step's factors.

    The arithmetic is the core's :func:`flowspec.ode.step` term by term; the stage
    times ``t<i>`` and the row factors ``a<i>`` and ``b`` are precomputed
    (:func:`_factors`, in float64 on the host for host grids).
    """
    tab = tableau(method)
    tree_map = jax.tree_util.tree_map

    def row(scale: Any, weights: tuple[float, ...], ks: list[Any]) -> Any:
        return tree_map(lambda xi, *ki: xi + scale * weighted_sum(weights, ki), x, *ks)

    ks = [f(s["t"], x)]
    for i, a in enumerate(tab.a):
        ks.append(f(s[f"t{i}"], row(s[f"a{i}"], a.weights, ks)))
    return row(s["b"], tab.b.weights, ks)


def _factors(method: str, t: Any, h: Any) -> dict[str, Any]:
    """Per-step stage times and row factors of ``method`` for times ``t`` and steps ``h``."""
    tab = tableau(method)
    out = {"t": t, "b": fraction(h, tab.b.factor)}
    for i, (c, a) in enumerate(zip(tab.c, tab.a, strict=True)):
        out[f"t{i}"] = t + fraction(h, c)
        out[f"a{i}"] = fraction(h, a.factor)
    return out


def _schedule_from_host(method: str, grid: np.ndarray, dtype: Any) -> dict[str, Array]:
    """Per-step times and factors of a float64 host grid, rounded once to ``dtype``."""
    raw = _factors(method, grid[:-1], np.diff(grid))
    return {k: jnp.asarray(v, dtype=dtype) for k, v in raw.items()}


def _schedule_from_array(method: str, grid: Array) -> dict[str, Array]:
    return _factors(method, grid[:-1], grid[1:] - grid[:-1])


def _scan(
    f: Callable[[Array, Any], Any],
    method: str,
    steps: dict[str, Array],
    state: Any,
    path: bool,
    constants: dict[str, float] | None = None,
) -> Any:
    """Scan one step over ``steps``; ``constants`` are step factors shared by every step."""
    constants = constants or {}

    def body(x: Any, s: dict[str, Array]) -> tuple[Any, Any]:
        y = _rk_step(f, method, {**constants, **s}, x)
        return y, (y if path else None)

    last, ys = jax.lax.scan(body, state, steps)
    if not path:
        return last
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b], axis=0), state, ys)


def _check_field(field: Any, name: str = "field") -> None:
    if not callable(field):
        raise TypeError(
            f"`{name}` must be a callable {name}(t, x), got {validation.describe(field)}"
        )


def _check_method(method: Any) -> None:
    tableau(method)


def euler(
    field: Field,
    x0: Array,
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    return_path: bool = False,
) -> Array:
    r""":func:`flowspec.euler` on ``jax.lax.scan``: :math:`x_{k+1} = x_k + h\, v(t_k, x_k)`.

    :math:`h = (t_1 - t_0)/\text{steps}` and :math:`t_k = t_0 + k h` exactly as in the
    core (computed in float64 from k, rounded once to ``x0``'s dtype). One step is traced
    and compiled whatever ``steps`` is; the result is reverse-mode differentiable with
    respect to ``x0`` and to anything ``field`` closes over.

    Parameters
    ----------
    field : callable
        ``field(t, x)`` with t of shape (B,); must return an array shaped like ``x``.
    x0 : JAX array, shape (B, *event)
    steps : int
        Number of steps, >= 1 (static).
    t0, t1 : float
        Start and end times (host numbers); ``t1 < t0`` integrates backwards.
    return_path : bool
        Return all ``steps + 1`` states on a new leading axis.

    Returns
    -------
    JAX array, shape (B, *event), or (steps + 1, B, *event) with return_path

    Examples
    --------
    >>> import jax, jax.numpy as jnp, flowspec as fs
    >>> fj = fs.backends.get("jax")
    >>> jax.jit(lambda x: fj.euler(lambda t, x: jnp.ones_like(x), x, steps=4))(jnp.zeros((2, 1))).tolist()
    [[1.0], [1.0]]
    """
    _check_field(field)
    _check_state("x0", x0)
    times, h = validation.euler_times(steps, t0, t1)
    grid = np.asarray(times, dtype=np.float64)
    sched = {"t": jnp.asarray(grid, dtype=x0.dtype)}
    # h is the same Python float for every step, a compile-time constant as in the core
    return _scan(lambda t, x: _call(field, t, x), "euler", sched, x0, bool(return_path), {"b": h})


def _grid_schedule(
    method: str, time_grid: Any, dtype: Any, like: Array, name: str = "time_grid"
) -> Any:
    """Validate ``time_grid`` (host grids by value, JAX grids by shape/dtype) and schedule it.

    Returns (schedule dict, host grid as float64 NumPy array or None).
    """
    if array_api_compat.is_array_api_obj(time_grid) and not array_api_compat.is_numpy_array(
        time_grid
    ):
        if not array_api_compat.is_jax_array(time_grid):
            raise TypeError(
                f"`{name}` must be a sequence of numbers, a NumPy array or a JAX array, got "
                f"{validation.describe(time_grid)}"
            )
        validation.check_float(jnp, name, time_grid, like=("x0", like))
        if time_grid.ndim != 1 or time_grid.shape[0] < 2:
            raise ValueError(
                f"`{name}` must be 1-D with at least 2 times, got shape {tuple(time_grid.shape)}"
            )
        return _schedule_from_array(method, time_grid), None
    grid = validation.host_grid(name, time_grid)
    return _schedule_from_host(method, grid, dtype), grid


def integrate(
    field: Field, x0: Array, time_grid: Any, method: Method = "euler", return_path: bool = False
) -> Array:
    r""":func:`flowspec.integrate` on ``jax.lax.scan``: a fixed-step method over a time grid.

    ``method`` is ``"euler"``, ``"midpoint"``, ``"heun"`` or ``"rk4"`` (orders 1, 2, 2,
    4), with the core's arithmetic. A host grid (list, tuple, NumPy array) is validated
    (finite, strictly monotone) and its step times and sizes are computed in float64 and
    rounded once, as in the core; a JAX grid (possibly traced) is used as given. One step
    is compiled for any grid length; reverse-mode differentiable.

    Parameters
    ----------
    field : callable
        ``field(t, x)`` with t of shape (B,).
    x0 : JAX array, shape (B, *event)
    time_grid : sequence of float, NumPy array or 1-D JAX array of x0's dtype
    method : {"euler", "midpoint", "heun", "rk4"}
    return_path : bool

    Returns
    -------
    JAX array, shape (B, *event), or (len(time_grid), B, *event) with return_path

    Examples
    --------
    >>> import jax.numpy as jnp, numpy as np, flowspec as fs
    >>> fj = fs.backends.get("jax")
    >>> x = fj.integrate(lambda t, x: -x, jnp.ones((1, 1)), np.linspace(0.0, 1.0, 9), "rk4")
    >>> round(float(x[0, 0]), 4), round(float(np.exp(-1.0)), 4)
    (0.3679, 0.3679)
    """
    _check_field(field)
    _check_method(method)
    _check_state("x0", x0)
    sched, _ = _grid_schedule(method, time_grid, x0.dtype, x0)
    return _scan(lambda t, x: _call(field, t, x), method, sched, x0, bool(return_path))


# --------------------------------------------------------------------------------------
# divergence, continuity residual, likelihood
# --------------------------------------------------------------------------------------
def _exact_divergence(fx: Callable[[Array], Array], x: Array) -> Array:
    """Trace of the per-sample Jacobian of a batched map, by forward-mode JVPs.

    The tangent e_i (coordinate i of the event, in every sample at once) gives
    (J e_i)_i per sample; samples are independent, so d JVPs of the batched map give
    every diagonal entry. Evaluated ``_EXACT_CHUNK`` coordinates at a time.
    """
    batch, d = int(x.shape[0]), validation.event_size(x)
    event = tuple(x.shape[1:])

    def diag(i: Array) -> Array:
        tangent = jnp.broadcast_to(jnp.reshape(jax.nn.one_hot(i, d, dtype=x.dtype), event), x.shape)
        _, jv = jax.jvp(fx, (x,), (tangent,))
        return jnp.reshape(jv, (batch, d))[:, i]

    index = jnp.arange(d)
    if d <= _EXACT_CHUNK:
        diagonals = jax.vmap(diag)(index)
    else:
        diagonals = jax.lax.map(diag, index, batch_size=_EXACT_CHUNK)
    return jnp.sum(diagonals, axis=0)


def _hutchinson_divergence(fx: Callable[[Array], Array], x: Array, probes: Array) -> Array:
    """Mean over probes z of z . (J z), by one forward-mode JVP per probe."""
    batch = int(x.shape[0])

    def one(z: Array) -> Array:
        _, jz = jax.jvp(fx, (x,), (z,))
        return jnp.sum(jnp.reshape(z * jz, (batch, -1)), axis=1)

    return jnp.mean(jax.vmap(one)(probes), axis=0)


def _rademacher(key: Array, n_probes: int, x: Array) -> Array:
    return jax.random.rademacher(key, (n_probes, *x.shape), dtype=x.dtype)


def _check_probes(method: str, key: Any, n_probes: Any) -> None:
    if method not in ("exact", "hutchinson"):
        raise ValueError(f"`method` must be 'exact' or 'hutchinson', got {method!r}")
    if isinstance(n_probes, bool) or not isinstance(n_probes, numbers.Integral) or n_probes < 1:
        raise ValueError(f"`n_probes` must be an integer >= 1, got {validation.describe(n_probes)}")
    if method == "hutchinson":
        _check_key(key)


def divergence(
    field: Field | GaussianPath,
    t: Array | float,
    x: Array,
    *args: Any,
    method: Literal["exact", "hutchinson"] = "exact",
    key: Array | None = None,
    n_probes: int = 1,
) -> Array:
    r"""The divergence :math:`\nabla_x \cdot v_t(x)` of a field by autodiff, shape (B,).

    ``method="exact"`` sums the diagonal of each sample's Jacobian, obtained by d
    forward-mode JVPs of the batched field (d = event size, any event shape): exact up
    to rounding, cost d field evaluations, meant for small d. ``method="hutchinson"``
    is Hutchinson's unbiased estimator (paper App. C):
    :math:`\frac1K \sum_k z_k^\top (\partial_x v)\, z_k` with K = ``n_probes`` Rademacher
    probes drawn from ``key``, one JVP each; its variance per sample is
    :math:`\frac{2}{K}\sum_{i \ne j} J_{ij}^2`-sized (zero for a diagonal Jacobian).

    The field must treat samples independently (row b of the output depends on row b
    of ``x`` only), as any model does.

    With a :class:`~flowspec.GaussianPath` first, ``divergence(path, x, x1, t)`` is the
    path method :meth:`flowspec.GaussianPath.divergence` (closed form), following the
    backend rule that path methods take the path first.

    Parameters
    ----------
    field : callable
        ``field(t, x)`` with t of shape (B,).
    t : float or JAX array, shape () or (B,) or (B, 1, ..., 1)
    x : JAX array, shape (B, *event)
    method : {"exact", "hutchinson"}
    key : jax.random key
        Required for ``"hutchinson"``.
    n_probes : int
        Number of Hutchinson probes, >= 1.

    Examples
    --------
    >>> import jax.numpy as jnp, flowspec as fs
    >>> fj = fs.backends.get("jax")
    >>> fj.divergence(lambda t, x: -2.0 * x, 0.5, jnp.ones((2, 3))).tolist()
    [-6.0, -6.0]
    """
    if isinstance(field, GaussianPath):
        if len(args) != 1:
            raise TypeError("`divergence(path, x, x1, t)` takes exactly x, x1 and t")
        return _path_divergence(field, t, x, args[0])
    if args:
        raise TypeError(f"`divergence(field, t, x)` got {len(args)} extra positional arguments")
    _check_field(field)
    _check_state("x", x)
    _check_probes(method, key, n_probes)
    tb = _per_sample(_time(t, x))

    def fx(xx: Array) -> Array:
        return validation.check_output("field(t, x)", field(tb, xx), jnp, tuple(x.shape), x.dtype)

    if method == "exact":
        return _exact_divergence(fx, x)
    return _hutchinson_divergence(fx, x, _rademacher(key, int(n_probes), x))


def continuity_residual(
    log_prob: Callable[[Array, Array], Array],
    velocity: Callable[[Array, Array], Array],
    t: Array | float,
    x: Array,
) -> Array:
    r""":func:`flowspec.continuity_residual` with every derivative by JAX autodiff, shape (B,).

    .. math:: r = \partial_t \log p_t(x) + \nabla\cdot u_t(x) + u_t(x)\cdot\nabla_x \log p_t(x)

    :math:`\partial_t` is one forward-mode JVP in t, :math:`\nabla_x \log p_t` one
    reverse-mode VJP, and the divergence is :func:`divergence` with ``"exact"``: the
    residual of a pair satisfying the continuity equation (paper eq. 26) is zero up to
    rounding, not up to a finite-difference truncation error. Both callables must treat
    samples independently.

    Parameters
    ----------
    log_prob : callable
        ``log_prob(t, x) -> (B,)``, t of shape (B,).
    velocity : callable
        ``velocity(t, x) -> (B, *event)``.
    t : float or JAX array, shape () or (B,) or (B, 1, ..., 1)
    x : JAX array, shape (B, *event)

    Examples
    --------
    >>> import jax.numpy as jnp, flowspec as fs
    >>> fj = fs.backends.get("jax"); path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    >>> x1 = jnp.array([[1.0, -2.0]])
    >>> lp = lambda t, x: fj.log_prob(path, x, x1, t); u = lambda t, x: fj.velocity(path, x, x1, t)
    >>> bool(abs(fj.continuity_residual(lp, u, 0.5, jnp.array([[0.3, 0.1]]))[0]) < 1e-5)
    True
    """
    _check_field(log_prob, "log_prob")
    _check_field(velocity, "velocity")
    _check_state("x", x)
    batch = int(x.shape[0])
    tb = _per_sample(_time(t, x))

    def lp(tt: Array, xx: Array) -> Array:
        return validation.check_output("log_prob(t, x)", log_prob(tt, xx), jnp, (batch,), x.dtype)

    def vel(xx: Array) -> Array:
        return validation.check_output(
            "velocity(t, x)", velocity(tb, xx), jnp, tuple(x.shape), x.dtype
        )

    _, dt_log_p = jax.jvp(lambda tt: lp(tt, x), (tb,), (jnp.ones_like(tb),))
    _, pullback = jax.vjp(lambda xx: lp(tb, xx), x)
    (grad_log_p,) = pullback(jnp.ones((batch,), dtype=x.dtype))
    u = vel(x)
    transport = jnp.sum(jnp.reshape(u * grad_log_p, (batch, -1)), axis=1)
    return dt_log_p + _exact_divergence(vel, x) + transport


def log_likelihood(
    field: Field,
    x1: Array,
    log_p0: Callable[[Array], Array],
    time_grid: Any,
    method: Method = "euler",
    divergence: Literal["exact", "hutchinson"] | Callable[[Array, Array], Array] = "exact",
    *,
    key: Array | None = None,
    n_probes: int = 1,
) -> Array:
    r"""The model's :math:`\log p_1(x_1)` by the instantaneous change of variables, shape (B,).

    Integrates the augmented system :math:`\dot x = v_t(x)`, :math:`\dot g = \nabla\cdot v_t(x)`
    from :math:`(x_1, 0)` at t = 1 to t = 0 along ``time_grid`` (paper App. C, eq. 31-33) with
    one compiled ``lax.scan`` step, and returns
    :math:`\log p_0(x(0)) + g(0) = \log p_0(x(0)) - \int_0^1 \nabla\cdot v_t\, dt`.

    Parameters
    ----------
    field : callable
        ``field(t, x)`` with t of shape (B,).
    x1 : JAX array, shape (B, *event)
        Data points.
    log_p0 : callable
        ``log_p0(x0) -> (B,)``, the source log-density (e.g. standard normal).
    time_grid : sequence of float, NumPy array or 1-D JAX array
        Strictly decreasing inside [0, 1], from data (usually 1, or 1 - eps where the
        schedule diverges at 1) to noise (0): a grid [t_a, ..., t_b] gives
        :math:`\log p_{t_a}` from :math:`\log p_{t_b}` = ``log_p0``. Host grids are
        validated; a JAX grid is used as given.
    method : {"euler", "midpoint", "heun", "rk4"}
    divergence : "exact", "hutchinson" or callable
        How to get :math:`\nabla\cdot v_t`: autodiff (see :func:`divergence`), or a
        callable ``divergence(t, x) -> (B,)`` as in the reference. Hutchinson draws its
        ``n_probes`` Rademacher probes once from ``key`` and keeps them for the whole
        solve (the estimate of log p is then unbiased).
    key : jax.random key, required for "hutchinson"
    n_probes : int

    Returns
    -------
    JAX array, shape (B,)

    Examples
    --------
    With :math:`v_t(x) = x`, :math:`x(0) = x_1/e` and :math:`\int_0^1 \nabla\cdot v = d`:

    >>> import jax.numpy as jnp, numpy as np, flowspec as fs
    >>> fj = fs.backends.get("jax")
    >>> log_p0 = lambda x: -0.5 * jnp.sum(x**2, axis=1) - 0.5 * x.shape[1] * np.log(2 * np.pi)
    >>> grid = np.linspace(1.0, 0.0, 33)
    >>> lp = fj.log_likelihood(lambda t, x: x, jnp.ones((1, 2)), log_p0, grid, method="rk4")
    >>> bool(jnp.allclose(lp, log_p0(jnp.ones((1, 2)) / np.e) - 2.0, atol=1e-6))
    True
    """
    _check_field(field)
    _check_field(log_p0, "log_p0")
    _check_method(method)
    _check_state("x1", x1)
    batch = int(x1.shape[0])
    sched, host = _grid_schedule(method, time_grid, x1.dtype, x1)
    if host is not None:
        validation.check_data_to_noise("time_grid", host[0], host[-1], time_grid)

    if callable(divergence):
        user_div = divergence

        def div(tb: Array, x: Array) -> Array:
            return validation.check_output(
                "divergence(t, x)", user_div(tb, x), jnp, (batch,), x.dtype
            )

    elif divergence in ("exact", "hutchinson"):
        _check_probes(divergence, key, n_probes)
        probes = _rademacher(key, int(n_probes), x1) if divergence == "hutchinson" else None

        def div(tb: Array, x: Array) -> Array:
            def fx(xx: Array) -> Array:
                return validation.check_output(
                    "field(t, x)", field(tb, xx), jnp, tuple(x.shape), x.dtype
                )

            if probes is None:
                return _exact_divergence(fx, x)
            return _hutchinson_divergence(fx, x, probes)

    else:
        raise ValueError(
            f"`divergence` must be 'exact', 'hutchinson' or a callable divergence(t, x), "
            f"got {divergence!r}"
        )

    def augmented(t: Array, state: tuple[Array, Array]) -> tuple[Array, Array]:
        x, _ = state
        tb = jnp.broadcast_to(t, (batch,))
        v = validation.check_output("field(t, x)", field(tb, x), jnp, tuple(x.shape), x.dtype)
        return v, div(tb, x)

    state = (x1, jnp.zeros((batch,), dtype=x1.dtype))
    x0, g = _scan(augmented, method, sched, state, False)
    lp0 = validation.check_output("log_p0(x0)", log_p0(x0), jnp, (batch,), x1.dtype)
    return lp0 + g


# --------------------------------------------------------------------------------------
# The exact marginal (eq. 6, 8), fused on one device and sharded over devices (issue 16):
# the block partials, exact band, merge and read-out of flowspec.marginal (one
# definition), with the blocks run by lax.scan (one compiled block, memory O(B x block))
# and the shards merged by all_gather of their (B, D)-sized partials. Static shapes: the
# band's candidates are `band_capacity` columns of each row (the largest streamed
# log-weights of the groups with the largest maxima); the rows whose band holds more
# points are recomputed with 4 times the capacity (alone, where they are few), again,
# and then by the uncapped, exact path (every point of the block a candidate), under
# lax.cond, so no answer is ever inexact.
# --------------------------------------------------------------------------------------
def _marginal_inputs(
    path: Any, data: Any, x: Any, t: Any, weights: Any, quantity: Any, tolerance: Any = None
) -> tuple[Array, Any, Coefficients, Any]:
    _check_path(path)
    tolerance = _mg.check_tolerance(tolerance)
    names = (quantity,) if isinstance(quantity, str) else quantity
    if not isinstance(names, tuple) or not names or any(q not in _mg.QUANTITIES for q in names):
        raise ValueError(
            f"`quantity` must be one of {_mg.QUANTITIES} or a tuple of them, got {quantity!r}"
        )
    _check_jax("data", data)
    _check_jax("x", x)
    validation.check_float(jnp, "data", data)
    validation.check_float(jnp, "x", x, like=("data", data))
    validation.check_batch("x", x)
    if data.ndim < 2 or tuple(data.shape[1:]) != tuple(x.shape[1:]) or data.shape[0] < 1:
        raise ValueError(
            f"`data` must have shape (N, *event), N >= 1, with the event of `x` of shape "
            f"{tuple(x.shape)}, got shape {tuple(data.shape)}"
        )
    n = int(data.shape[0])
    if weights is not None:
        _check_jax("weights", weights)
        validation.check_float(jnp, "weights", weights, like=("data", data))
        if tuple(weights.shape) != (n,):
            raise ValueError(f"`weights` must have shape (N,) = {(n,)}, got {weights.shape}")
    arr = _mg.prepare_data(jnp, jnp.reshape(data, (n, -1)), weights)
    batch = int(x.shape[0])
    c = path.schedule.arrays(jnp, _time(t, x))
    alpha = jnp.reshape(c.alpha, (batch,))
    sigma = jnp.reshape(c.sigma, (batch,))
    rows = _mg.query_rows(
        jnp, jnp.reshape(x, (batch, -1)), alpha, sigma, arr.mean, arr.y_max, arr.lq_max, tolerance
    )
    return rows, arr, c, names


def _first(mask: Array, count: int) -> Array:
    """``first(mask, k)`` of :func:`flowspec.marginal.grouped_select`: masked
    min-reductions for a few columns, one ``top_k`` of the negated column index for
    many (XLA runs k min-reductions as k passes over the mask)."""
    if count <= _mg.GROUP:
        return _mg.first_columns(jnp, mask, count)
    width = int(mask.shape[1])
    score = jnp.where(mask, -jnp.arange(width, dtype=jnp.float32), -float(width))
    top, cols = jax.lax.top_k(score, count)  # the smallest columns first
    return jnp.where(top > -float(width), cols, width).astype(jnp.arange(1).dtype)


def _scan_partial(
    rows: Any, pts: Array, aug_t: Array, log_q: Array, offset: Any, block: int, capacity: int
) -> Any:
    """The Partial of n data points, by lax.scan over even blocks of at most ``block``.

    Two passes. The first takes every block at ``capacity`` candidates per row and
    leaves out the rows whose band overflows it, recording them (blocks, B). Only where
    some row overflowed does the second run: per block with such rows, those rows again
    with 4 times the capacity (on their own where they are at most an eighth of the
    rows), and so on, then by the uncapped exact path, merged into the first pass's
    result. So the common case costs one pass with no branch per block.
    """
    n, width = int(pts.shape[0]), int(pts.shape[1])
    blocks, block = _mg.block_layout(n, max(1, min(block, n)))
    if blocks * block > n:
        pts, aug_t, log_q = _mg.pad_points(jnp, pts, aug_t, log_q, blocks * block - n)
    stacked = (
        jnp.reshape(pts, (blocks, block, width)),
        jnp.moveaxis(jnp.reshape(aug_t, (width + 1, blocks, block)), 1, 0),
        jnp.reshape(log_q, (blocks, block)),
        jnp.arange(blocks, dtype=jnp.arange(1).dtype) * block + offset,
    )
    empty = _mg.empty_partial(jnp, rows)
    tiers = [capacity]
    while tiers[-1] * 4 < block:
        tiers.append(tiers[-1] * 4)
    few = max(1, int(rows.xc.shape[0]) // 8)

    def capped(r: Any, i: int, item: tuple[Array, ...]) -> tuple[Any, Array]:
        select = _mg.grouped_select(jnp, tiers[i], _first)
        return _mg.block_partial_capped(jnp, r, *item[:3], select, offset=item[3], fused=True)

    def exact(r: Any, item: tuple[Array, ...]) -> Any:
        return _mg.block_partial(jnp, r, *item[:3], offset=item[3])

    def first_pass(carry: Any, item: tuple[Array, ...]) -> tuple[Any, Array]:
        part, over = capped(rows, 0, item)
        return _mg.merge_partials(jnp, rows, carry, _mg.where_rows(jnp, over, empty, part)), over

    out, overs = jax.lax.scan(first_pass, empty, stacked)
    if tiers[0] >= block:  # the whole block fits: no overflow is possible
        return out

    def fix(i: int, over: Array, item: tuple[Array, ...]) -> Any:
        # the rows `over` (they overflowed tier i - 1) exactly, the others empty
        def some_rows() -> Any:
            idx = jnp.nonzero(over, size=few, fill_value=jnp.argmax(over))[0]
            sub = type(rows)(*(f[idx] for f in rows))
            if i == len(tiers):
                fixed = exact(sub, item)
            else:
                fixed, again = capped(sub, i, item)
                fixed = jax.lax.cond(jnp.any(again), lambda: exact(sub, item), lambda: fixed)
            return type(empty)(*(f.at[idx].set(e) for f, e in zip(empty, fixed, strict=True)))

        def all_rows() -> Any:
            if i == len(tiers):
                return _mg.where_rows(jnp, over, exact(rows, item), empty)
            part, again = capped(rows, i, item)
            again = again & over
            part = _mg.where_rows(jnp, over, part, empty)
            return jax.lax.cond(
                jnp.any(again),
                lambda: _mg.where_rows(jnp, again, fix(i + 1, again, item), part),
                lambda: part,
            )

        return jax.lax.cond(jnp.sum(over.astype(jnp.int32)) <= few, some_rows, all_rows)

    def second_pass(carry: Any, item: tuple[Array, ...]) -> tuple[Any, None]:
        over = item[-1]
        part = jax.lax.cond(jnp.any(over), lambda: fix(1, over, item), lambda: empty)
        return _mg.merge_partials(jnp, rows, carry, part), None

    return jax.lax.cond(
        jnp.any(overs),
        lambda: jax.lax.scan(second_pass, out, (*stacked, overs))[0],
        lambda: out,
    )


def _marginal_sizes(block_size: Any, band_capacity: Any, batch: int) -> tuple[int, int]:
    for name, value in (("block_size", block_size), ("band_capacity", band_capacity)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be None or an integer >= 1, got {value!r}")
    block = max(1, _mg.BLOCK_ELEMENTS // batch) if block_size is None else int(block_size)
    return block, _BAND_CAPACITY if band_capacity is None else int(band_capacity)


#: Default band capacity of the fused JAX kernels (candidates per row and block).
_BAND_CAPACITY = 4


def _marginal_out(rows: Any, part: Any, arr: Any, c: Any, x: Array, quantity: Any) -> Any:
    st = _mg.finish(jnp, rows, part)
    outs = []
    for name in (quantity,) if isinstance(quantity, str) else quantity:
        out = _mg.readout(jnp, name, rows, st, c, arr.mean)
        outs.append(out if out.ndim == 1 else jnp.reshape(out, x.shape))
    return outs[0] if isinstance(quantity, str) else tuple(outs)


def marginal(
    path: GaussianPath,
    data: Array,
    x: Array,
    t: Array | float,
    quantity: str | tuple[str, ...] = "velocity",
    *,
    weights: Array | None = None,
    block_size: int | None = None,
    band_capacity: int | None = None,
    tolerance: float | None = None,
) -> Array | tuple[Array, ...]:
    r"""One quantity of the exact marginal (eq. 6, 8) of ``data``, fused, on one device.

    The reduction of :class:`flowspec.EmpiricalMarginal` itself (the block partials,
    exact band, merge and read-out of :mod:`flowspec.marginal`), traced once per block
    and run by ``jax.lax.scan``: under ``jax.jit`` XLA fuses the max, ``exp`` and sum
    of each block, and the extra memory is a few (B, ``block_size``) arrays.
    ``quantity`` is ``"velocity"`` (eq. 8), ``"denoise"``, ``"score"``, ``"log_prob"``
    (eq. 6) or ``"divergence"``, or a tuple of these names (one pass over the data for
    all; a tuple of results comes back); ``block_size`` defaults to
    ``max(1, 2**22 // B)``. Returns (B, *event) or (B,) per quantity.

    Shapes must be static, so each row's exact band (the points whose streamed
    log-weight lies within the streamed error bound of the block's maximum, recomputed
    exactly) is taken from ``band_capacity`` candidates (default 4), found by
    :func:`flowspec.marginal.grouped_select` from the maxima of groups of 16 columns,
    with no sort or top-k over the block. The blocks are made even (at most
    ``block_size`` points, the last padded with zero-weight points). The rows whose
    band holds more points are left out of the first pass over the data and recomputed
    in a second one, which runs only where some row overflowed: with 4 times the
    capacity (on their own where they are at most an eighth of the rows, else with the
    whole block), again while that is below the block size, and then by the exact path
    with every point of the block a candidate (``lax.cond``; O(B x block x D) extra
    work for that block). The answer is always the exact-band one; only its cost
    depends on how diffuse the posterior is. ``tolerance`` sets the band's width (see
    :func:`flowspec.marginal.check_tolerance`; default the unit roundoff: every weight
    as accurate as the dtype allows).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, flowspec as fs
    >>> fj = fs.backends.get("jax")
    >>> path = fs.GaussianPath(fs.CondOT())
    >>> data = jnp.array([[-1.0], [1.0]])
    >>> f = jax.jit(lambda d, x: fj.marginal(path, d, x, 0.5, "denoise"))
    >>> f(data, jnp.array([[0.0]])).tolist()
    [[0.0]]
    """
    rows, arr, c, _ = _marginal_inputs(path, data, x, t, weights, quantity, tolerance)
    block, capacity = _marginal_sizes(block_size, band_capacity, int(x.shape[0]))
    part = _scan_partial(rows, arr.pts, arr.aug_t, arr.log_q, 0, block, capacity)
    return _marginal_out(rows, part, arr, c, x, quantity)


def sharded_marginal(
    path: GaussianPath,
    data: Array,
    x: Array,
    t: Array | float,
    mesh: Any,
    axis: str,
    quantity: str | tuple[str, ...] = "velocity",
    *,
    block_size: int | None = None,
    band_capacity: int | None = None,
    tolerance: float | None = None,
) -> Array | tuple[Array, ...]:
    r""":func:`marginal` with the data sharded over the devices of ``mesh`` along ``axis``.

    Each device reduces its shard of the data (N divisible by the number of devices on
    ``axis``) against the replicated queries with :func:`marginal`'s fused scan; the
    shards' (B, D)-sized partial statistics are then all-gathered and merged on every
    device (``shard_map``; a collective log-sum-exp by :func:`flowspec.marginal.merge_all`),
    so only O(B x D x devices) numbers cross devices per query batch. Equal to
    :func:`marginal` on one device up to the rounding of the regrouped sums. Uniform
    weights; ``block_size``, ``band_capacity`` and ``tolerance`` as for :func:`marginal`.
    """
    rows, arr, c, _ = _marginal_inputs(path, data, x, t, None, quantity, tolerance)
    shards = int(mesh.shape[axis])
    n = int(arr.pts.shape[0])
    if n % shards:
        raise ValueError(
            f"`data` must have N divisible by the {shards} devices of mesh axis {axis!r}, "
            f"got N = {n}"
        )
    block, capacity = _marginal_sizes(block_size, band_capacity, int(x.shape[0]))
    local = n // shards

    def per_shard(rows_rep: Any, pts: Array, aug_t: Array, log_q: Array) -> tuple[Array, ...]:
        offset = jax.lax.axis_index(axis).astype(jnp.arange(1).dtype) * local
        mine = _scan_partial(rows_rep, pts, aug_t, log_q, offset, block, capacity)
        # the collective log-sum-exp: every shard's (B, D)-sized partial to every
        # device, merged there by the one associative merge
        every = jax.lax.all_gather(tuple(mine), axis)
        parts = [_mg.Partial(*(f[i] for f in every)) for i in range(shards)]
        return tuple(_mg.merge_all(jnp, rows_rep, parts))

    spec = jax.sharding.PartitionSpec
    fields = jax.shard_map(
        per_shard,
        mesh=mesh,
        in_specs=(spec(), spec(axis), spec(None, axis), spec(axis)),
        out_specs=spec(),
        check_vma=False,
    )(rows, arr.pts, arr.aug_t, arr.log_q)
    return _marginal_out(rows, _mg.Partial(*fields), arr, c, x, quantity)


# --------------------------------------------------------------------------------------
# coupled paths and couplings (flowspec.coupled_paths, flowspec.couplings)
# --------------------------------------------------------------------------------------
def coupled_sample_and_target(
    path: Any, x0: Array, x1: Array, eps: Array, t: Array | float
) -> tuple[Array, Array]:
    r""":meth:`flowspec.coupled_paths.CoupledPath.sample_and_target` on JAX arrays, traceable.

    :math:`x_t = \alpha_t x_1 + \sigma_t x_0 + \gamma_t\varepsilon` and
    :math:`u = \dot\alpha_t x_1 + \dot\sigma_t x_0 + \dot\gamma_t\varepsilon`, with the
    coefficients of the core's schedule and noise scale; under ``jax.jit`` XLA fuses
    each output into one pass.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, flowspec as fs
    >>> from flowspec.coupled_paths import CoupledPath, BrownianBridgeNoise
    >>> fj = fs.backends.get("jax")
    >>> path = CoupledPath(fs.CondOT(), BrownianBridgeNoise(1.0))
    >>> f = jax.jit(lambda a, b, e, t: fj.coupled_sample_and_target(path, a, b, e, t))
    >>> x_t, u = f(jnp.zeros((1, 1)), 2 * jnp.ones((1, 1)), jnp.ones((1, 1)), 0.5)
    >>> x_t.tolist(), u.tolist()
    ([[1.5]], [[2.0]])
    """
    from ..coupled_paths import CoupledPath

    if not isinstance(path, CoupledPath):
        raise TypeError(f"`path` must be a flowspec CoupledPath, got {validation.describe(path)}")
    _check_state("x0", x0)
    for name, a in (("x1", x1), ("eps", eps)):
        _check_jax(name, a)
        validation.check_float(jnp, name, a, like=("x0", x0))
        validation.check_same_shape("x0", x0, name, a)
    tt = _time(t, x0, x_name="x0")
    c = path.schedule.coefficients(jnp, tt)
    n = path.noise.coefficients(jnp, tt)
    return (
        c.alpha * x1 + c.sigma * x0 + n.gamma * eps,
        c.d_alpha * x1 + c.d_sigma * x0 + n.d_gamma * eps,
    )


def sinkhorn(
    x0: Array,
    x1: Array,
    reg: float,
    *,
    tol: float | None = 1e-6,
    max_iter: int = 1000,
    check_every: int = 10,
    on_failure: str = "raise",
    scaling_stages: int = 8,
) -> Any:
    r""":func:`flowspec.couplings.sinkhorn` under ``jax.jit``, stopping at ``tol``.

    The entropic plan, a coupling :math:`q(z)` of the conditions of eq. 6-9. The core's
    log-domain iteration (its warm start, iteration, error and plan, called here on
    JAX arrays) runs in a ``lax.while_loop`` that stops once the L1 marginal error,
    computed every ``check_every`` iterations and at ``max_iter``, is at most ``tol``:
    the same iterates and the same stopping iteration as the core's, nothing read on
    the host, so it traces. With ``tol=None`` it is the core's fixed ``max_iter``
    iterations.

    Failure is not silent: a non-finite error, or ``max_iter`` reached above ``tol``,
    raises RuntimeError (``on_failure="raise"``) or warns (``"warn"``), at once when
    called eagerly and through a host callback (``jax.debug.callback``) under
    ``jax.jit``, where the RuntimeError reaches the caller wrapped in JAX's runtime
    error. ``iterations`` is a 0-d integer array.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, flowspec as fs
    >>> fj = fs.backends.get("jax")
    >>> x0 = jnp.array([[0.0], [1.0]]); x1 = jnp.array([[0.1], [0.9]])
    >>> res = jax.jit(lambda a, b: fj.sinkhorn(a, b, 0.05, tol=1e-5))(x0, x1)
    >>> jnp.round(res.plan, 3).tolist(), bool(res.error <= 1e-5)
    ([[0.5, 0.0], [0.0, 0.5]], True)
    """
    from .. import couplings as _c

    _check_state("x0", x0)
    _check_jax("x1", x1)
    if tol is None:
        return _c.sinkhorn(
            x0,
            x1,
            reg,
            tol=None,
            max_iter=max_iter,
            check_every=check_every,
            on_failure=on_failure,
            scaling_stages=scaling_stages,
        )
    _c._pair_inputs(x0, x1)
    eps, tol, max_iter, check_every, stages = _c._sinkhorn_options(
        reg, tol, max_iter, check_every, on_failure, scaling_stages
    )
    assert tol is not None
    n0, n1 = int(x0.shape[0]), int(x1.shape[0])
    log_a, log_b = -math.log(n0), -math.log(n1)
    cost = _c._cost(jnp, x0, x1)
    g, done = _c._log_warm_start(jnp, cost, eps, stages, check_every)
    scaled = cost / eps

    def error(f: Array, g: Array) -> Array:
        return _c._row_error(jnp, f, g, scaled, log_a, log_b)

    def body(state: tuple[Array, Array, Array, Array]) -> tuple[Array, Array, Array, Array]:
        k, _, g, err = state
        f, g = _c._log_iteration(jnp, g, scaled, log_a, log_b)
        k = k + 1
        check = (k % check_every == 0) | (k == max_iter)
        return k, f, g, jax.lax.cond(check, error, lambda f, g: err, f, g)

    def more(state: tuple[Array, Array, Array, Array]) -> Array:
        k, _, _, err = state
        return (k < max_iter) & (err > tol)  # a NaN error stops too

    start = (jnp.asarray(0), jnp.zeros_like(cost[:, 0]), g, jnp.asarray(jnp.inf, cost.dtype))
    k, f, g, err = jax.lax.while_loop(more, body, start)

    def report(value: Any, steps: Any) -> None:
        _c._check_outcome(
            float(value), int(steps), tol=tol, max_iter=max_iter, reg=eps, on_failure=on_failure
        )

    if isinstance(err, jax.core.Tracer):
        jax.debug.callback(report, err, k)
    else:
        report(err, k)
    plan = _c._log_plan(jnp, f, g, scaled, log_a, log_b)
    return _c.SinkhornResult(plan, err, done + k)


def entropic_pairs(
    key: Array, x0: Array, x1: Array, reg: float, **sinkhorn_options: Any
) -> tuple[Array, Array]:
    r""":func:`flowspec.couplings.entropic_pairs` with the uniforms drawn from ``key``.

    The plan is :func:`sinkhorn` (a ``lax.while_loop`` to ``tol``, so it traces under
    ``jax.jit``; ``sinkhorn_options`` are passed on); each x0 keeps its place and its
    partner is drawn from its row by :func:`flowspec.couplings.draw_rows`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, flowspec as fs
    >>> fj = fs.backends.get("jax")
    >>> x0 = jnp.array([[0.0], [1.0]])
    >>> a, b = jax.jit(lambda k, a, b: fj.entropic_pairs(k, a, b, 0.01))(jax.random.key(0), x0, x0[::-1])
    >>> b.tolist()
    [[0.0], [1.0]]
    """
    from ..couplings import draw_rows

    _check_key(key)
    _check_state("x0", x0)
    u = jax.random.uniform(key, (int(x0.shape[0]),), dtype=x0.dtype)
    res = sinkhorn(x0, x1, reg, **sinkhorn_options)
    return jnp.array(x0, copy=True), jnp.take(x1, draw_rows(res.plan, u), axis=0)


# --------------------------------------------------------------------------------------
# Discrete Flow Matching (flowspec.discrete): the random draws, from a JAX key
# --------------------------------------------------------------------------------------
# The discrete core takes caller-drawn uniforms so that it runs on every array library;
# these wrappers draw them with ``jax.random.uniform`` from an explicit key and call the
# core, so there is one definition of every discrete formula. They trace under jax.jit
# (the Euler loop unrolls over its static number of steps).


def _discrete_dtype(dtype: Any) -> Any:
    if dtype is None:
        return jnp.asarray(0.0).dtype  # float64 with x64 enabled, else float32
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype!r}")
    return dtype


def discrete_source_sample(path: Any, key: Array, shape: tuple[int, ...]) -> Array:
    """Source tokens of a :class:`flowspec.discrete.MixturePath`, shape ``shape`` (int64
    with x64 enabled); see :meth:`flowspec.discrete.MixturePath.source_sample`."""
    u = jax.random.uniform(key, tuple(int(s) for s in shape), dtype=_discrete_dtype(None))
    return path.source_sample(u)


def discrete_sample(path: Any, key: Array, x0: Array, x1: Array, t: Array | float) -> Array:
    r"""A draw of :math:`x_t \sim p_t(\cdot \mid x_0, x_1)` of a mixture path.

    :meth:`flowspec.discrete.MixturePath.sample` with ``jax.random.uniform`` uniforms in
    t's dtype (the default floating dtype when t is a Python number).
    """
    _check_jax("x1", x1)
    # a weakly typed scalar (a Python float traced by jit) takes the default dtype
    weak = bool(getattr(getattr(t, "aval", None), "weak_type", getattr(t, "weak_type", False)))
    dtype = t.dtype if isinstance(t, jax.Array) and not weak else None
    u = jax.random.uniform(key, tuple(x1.shape), dtype=_discrete_dtype(dtype))
    return path.sample(x0, x1, t, u)


def discrete_euler(
    rate: Callable[[Array, Array], Array],
    key: Array,
    x0: Array,
    *,
    steps: int,
    t0: float = 0.0,
    t1: float = 1.0,
    dtype: Any = None,
    return_path: bool = False,
) -> Array:
    r"""The discrete Euler (jump) sampler with uniforms from ``jax.random.uniform(key)``.

    :func:`flowspec.discrete.euler` on the grid :math:`t_k = t_0 + k h`; ``rate(t, x)``
    gets t of shape (B,) in ``dtype`` (the default floating dtype if None).
    """
    from ..discrete import euler as _discrete_euler_core

    _check_jax("x0", x0)
    validation.euler_times(steps, t0, t1)
    u = jax.random.uniform(key, (int(steps), *x0.shape), dtype=_discrete_dtype(dtype))
    return _discrete_euler_core(rate, x0, u, steps=steps, t0=t0, t1=t1, return_path=return_path)


__all__ += ["discrete_euler", "discrete_sample", "discrete_source_sample"]


# --------------------------------------------------------------------------------------
# Riemannian Flow Matching (flowspec.riemannian): random sources and autodiff divergences
# --------------------------------------------------------------------------------------
def riemannian_source(manifold: Any, key: Any, batch: int, dtype: Any = None) -> Array:
    """``batch`` samples of ``manifold``'s source, its normals or uniforms drawn with ``key``.

    The core takes caller-drawn randomness (``manifold.source_sample(draws)``); this
    draws it with ``jax.random.normal`` / ``uniform`` (dtype: JAX's default float).
    Traceable: ``jax.jit(riemannian_source, static_argnums=(0, 2))``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from flowspec.backends.jax import riemannian_source
    >>> from flowspec.riemannian import SO3
    >>> r = riemannian_source(SO3(), jax.random.key(0), 3)
    >>> bool(jnp.allclose(jnp.linalg.det(r), 1.0, atol=1e-5))
    True
    """
    from ..riemannian import Manifold

    if not isinstance(manifold, Manifold):
        raise TypeError(
            f"`manifold` must be a flowspec.riemannian manifold, got {validation.describe(manifold)}"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"`batch` must be an integer >= 1, got {validation.describe(batch)}")
    kind, shape = manifold.source_draws
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    if kind == "normal":
        z = jax.random.normal(key, (batch, *shape), dtype=dtype)
    else:
        z = jax.random.uniform(key, (batch, *shape), dtype=dtype)
    return manifold.source_sample(z)


def riemannian_divergence(manifold: Any, field: Any, t: Any, x: Array) -> Array:
    r"""The Riemannian divergence :math:`\mathrm{tr}(P_x\, \partial_x v)` by ``jax.jvp``, shape (B,).

    As :func:`flowspec.backends.torch.riemannian_divergence`: the trace of ``proju``
    composed with the field's Jacobian, one forward-mode product per embedding
    coordinate; traceable under ``jax.jit`` and differentiable.
    """
    from ..riemannian import Manifold

    if not isinstance(manifold, Manifold):
        raise TypeError(
            f"`manifold` must be a flowspec.riemannian manifold, got {validation.describe(manifold)}"
        )
    if not callable(field):
        raise TypeError(f"`field` must be a callable field(t, x), got {validation.describe(field)}")
    manifold._check(x=x)
    batch = int(x.shape[0])
    tb = jnp.reshape(validation.time_array(jnp, t, x), (batch,))
    size = validation.event_size(x)
    out = jnp.zeros((batch,), dtype=x.dtype)
    for j in range(size):
        e = jnp.zeros((batch, size), dtype=x.dtype).at[:, j].set(1.0)
        _, jv = jax.jvp(lambda y: field(tb, y), (x,), (jnp.reshape(e, x.shape),))
        out = out + jnp.reshape(manifold.proju(x, jv), (batch, size))[:, j]
    return out


def riemannian_log_likelihood(
    manifold: Any, field: Any, x1: Array, log_p0: Any, steps: int = 100, method: str = "euler"
) -> Array:
    r""":func:`flowspec.riemannian.log_likelihood` with :func:`riemannian_divergence` by ``jax.jvp``."""
    from ..riemannian import log_likelihood as _riemannian_log_likelihood

    def div(tb: Array, x: Array) -> Array:
        return riemannian_divergence(manifold, field, tb, x)

    return _riemannian_log_likelihood(manifold, field, x1, log_p0, div, steps=steps, method=method)  # type: ignore[arg-type]

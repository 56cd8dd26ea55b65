r"""The CuPy backend: fused GPU kernels where the Array API makes several passes.

The reference core already runs on CuPy arrays through array-api-compat. This module
adds, with the core's names and signatures (a path method becomes a function taking
the path first):

- :func:`sample_and_target`: the CFM training step (paper eq. 11 and 13) as **one**
  ``cupy.ElementwiseKernel`` pass that reads ``x0``, ``x1`` and the four per-sample
  coefficients and writes ``x_t`` and the target. The coefficients
  ``(alpha, sigma, d_alpha, d_sigma)`` are computed by the reference schedule on the
  (B,) time array, so one generic affine kernel serves every schedule, present or
  future; float32 and float64 share the kernel through its type placeholder ``T``.
- :func:`euler` and :func:`integrate`: the reference's solvers with the state, one
  stage buffer and the time array allocated once; each update is one fused kernel
  (``x += h v`` in place for Euler) and ``return_path`` writes into one preallocated
  (steps + 1, B, *event) array.
- :func:`sample_time` and :func:`sample_noise` on an explicit ``cupy.random.Generator``.

The exact marginal (:class:`flowspec.EmpiricalMarginal`, paper eq. 6 and 8) and the
continuity residual (:func:`flowspec.continuity_residual`) need nothing here: the core
runs on CuPy arrays through the Array API, its matrix products on cuBLAS.

Importing :mod:`flowspec` never imports this module; ``flowspec.backends.get("cupy")``
does, and needs CuPy (and, to run anything, a CUDA device).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

import array_api_compat
import cupy

from .. import continuity as _continuity
from .. import likelihood as _likelihood
from .. import losses as _losses
from .. import validation
from ..ode import METHODS, check_state, grid_times
from ..paths import GaussianPath
from ..typing import Array, Field
from . import _cupy_logic as _logic

__all__ = [
    "METHODS",
    "cfm_loss",
    "continuity_residual",
    "divergence",
    "euler",
    "integrate",
    "kernel_source",
    "log_likelihood",
    "log_prob",
    "sample",
    "sample_and_target",
    "sample_noise",
    "sample_time",
    "score",
    "target",
    "velocity",
]


@functools.cache
def _kernel(spec: _logic.KernelSpec) -> cupy.ElementwiseKernel:
    in_params, out_params, operation = spec.cuda()
    return cupy.ElementwiseKernel(
        in_params, out_params, operation, spec.name, options=_logic.NVRTC_OPTIONS
    )


def _launch(spec: _logic.KernelSpec, *args: Any, out: tuple[Array, ...] | None = None) -> Any:
    kernel = _kernel(spec)
    if out is None:
        return kernel(*args)
    return kernel(*args, *out)


def kernel_source(name: str) -> tuple[str, str, str]:
    """``(in_params, out_params, operation)`` of a fused kernel, for inspection.

    ``name`` is ``"flowspec_sample_and_target"`` or the kernel of a row of a solver's
    tableau: ``"flowspec_axpy"`` (``y = x + c[j] * k``), ``"flowspec_row_1_1"`` (Heun),
    ``"flowspec_row_1_2_2_1"`` (RK4).
    """
    known = _logic.kernels()
    if name not in known:
        raise ValueError(f"`name` must be one of {tuple(known)}, got {name!r}")
    return known[name].cuda()


def _require_cupy(name: str, x: Any) -> None:
    if not array_api_compat.is_cupy_array(x):
        raise TypeError(
            f"`{name}` must be a CuPy array for the cupy backend, got {validation.describe(x)}"
        )


# -- training step ---------------------------------------------------------------------


def sample_and_target(path: Any, x0: Array, x1: Array, t: Array | float) -> tuple[Array, Array]:
    r"""``(x_t, target)`` of a Gaussian path in one fused kernel pass.

    .. math:: x_t = \alpha_t x_1 + \sigma_t x_0, \qquad
              \text{target} = \dot\alpha_t x_1 + \dot\sigma_t x_0

    (paper eq. 11 and the target of eq. 14; eq. 22-23 for the OT path). Same
    validation and result as ``path.sample_and_target(x0, x1, t)``: the kernel is
    compiled without multiply-add contraction, so it rounds exactly as the Array API
    path does on the same coefficients.

    Parameters
    ----------
    path : GaussianPath
    x0, x1 : cupy.ndarray, shape (B, *event), float32 or float64
    t : float or cupy.ndarray, shape () or (B,) or (B, 1, ..., 1)

    Returns
    -------
    x_t, target : cupy.ndarray, shape (B, *event)

    Examples
    --------
    >>> import cupy as cp, flowspec as fs  # doctest: +SKIP
    >>> fcp = fs.backends.get("cupy")  # doctest: +SKIP
    >>> x_t, u = fcp.sample_and_target(fs.GaussianPath(fs.CondOT()),
    ...     cp.zeros((2, 3)), cp.ones((2, 3)), 0.5)  # doctest: +SKIP
    """
    _require_cupy("x0", x0)
    with x0.device:
        return _logic.sample_and_target(_launch, path, x0, x1, t)


# -- solvers ---------------------------------------------------------------------------


def euler(
    field: Field,
    x0: Array,
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    return_path: bool = False,
) -> Array:
    r"""The paper's Euler sampler :math:`x_{k+1} = x_k + h\,v(t_k, x_k)` with fused updates.

    Signature, validation and times (:math:`t_k = t_0 + k h`, never accumulated) as
    :func:`flowspec.euler`. The state is one buffer updated in place by one kernel per
    step; the field receives that buffer (and one reused time array of shape (B,)), so
    a field must not keep references to its inputs across calls. ``x0`` is not
    modified.

    Returns
    -------
    cupy.ndarray, shape (B, *event), or (steps + 1, B, *event) with ``return_path``
    """
    xp = check_state(field, x0, "euler")
    _require_cupy("x0", x0)
    with x0.device:
        plan = _logic.euler_plan(xp, t0, t1, steps, x0)
        return _logic.run_solver(_launch, xp, field, x0, plan, bool(return_path))


def integrate(
    field: Field,
    x0: Array,
    time_grid: Any,
    method: str = "euler",
    return_path: bool = False,
) -> Array:
    r"""Fixed-step integration over a time grid with fused updates and reused buffers.

    Signature, validation and arithmetic as :func:`flowspec.integrate` (methods
    ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"``). Stage times and step
    coefficients are computed once before the loop (one upload for a host grid; a grid
    on the device is used on the device, its values never read); each step then costs
    the field's evaluations and one fused kernel per stage.

    Returns
    -------
    cupy.ndarray, shape (B, *event), or (len(time_grid), B, *event) with ``return_path``
    """
    xp = check_state(field, x0, method)
    _require_cupy("x0", x0)
    grid = grid_times(xp, time_grid, x0)
    with x0.device:
        plan = _logic.solver_plan(xp, method, grid, x0)
        return _logic.run_solver(_launch, xp, field, x0, plan, bool(return_path))


# -- random helpers --------------------------------------------------------------------


def _check_generator(generator: Any) -> None:
    if not isinstance(generator, cupy.random.Generator):
        raise TypeError(
            f"`generator` must be a cupy.random.Generator (e.g. "
            f"cupy.random.default_rng(0)), got {validation.describe(generator)}"
        )


def _check_dtype(dtype: Any) -> Any:
    try:
        dt = cupy.dtype(dtype)
    except TypeError:
        raise TypeError(f"`dtype` must be float32 or float64, got {dtype!r}") from None
    if dt not in (cupy.dtype(cupy.float32), cupy.dtype(cupy.float64)):
        raise TypeError(f"`dtype` must be float32 or float64, got {dtype!r}")
    return dt


def sample_time(
    batch: int,
    *,
    generator: Any,
    dtype: Any = cupy.float32,
    low: float = 0.0,
    high: float = 1.0,
) -> Array:
    r"""Times :math:`t \sim U[\text{low}, \text{high})`, shape (B,), for the CFM loss (eq. 9).

    Parameters
    ----------
    batch : int
        B >= 1.
    generator : cupy.random.Generator
        Explicit source of randomness.
    dtype : float32 or float64
    low, high : float
        0 <= low < high <= 1; e.g. ``high = 1 - 1e-5`` as the paper's VP runs.

    Returns
    -------
    cupy.ndarray, shape (B,), on the current device
    """
    _check_generator(generator)
    dt = _check_dtype(dtype)
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ValueError(f"`batch` must be an integer >= 1, got {validation.describe(batch)}")
    lo = validation.real_number("low", low)
    hi = validation.real_number("high", high)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"`low` and `high` must satisfy 0 <= low < high <= 1, got {lo!r}, {hi!r}")
    u = generator.random(int(batch), dtype=dt)
    if lo == 0.0 and hi == 1.0:
        return u
    # rounding a draw to the dtype can give `high` itself or a value below `low`: clip to
    # the dtype's values in [low, high) (a ValueError if there are none)
    lo_dt, hi_dt = validation.representable_interval(lo, hi, dt, cupy)
    return cupy.clip(u * (hi - lo) + lo, lo_dt, hi_dt)


def sample_noise(shape: Any, *, generator: Any, dtype: Any = cupy.float32) -> Array:
    r"""Source samples :math:`x_0 \sim \mathcal N(0, I)` of shape (B, *event).

    Parameters
    ----------
    shape : tuple of int
        (B, *event), B >= 1.
    generator : cupy.random.Generator
    dtype : float32 or float64

    Returns
    -------
    cupy.ndarray of ``shape``, on the current device
    """
    _check_generator(generator)
    dt = _check_dtype(dtype)
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    if (
        not isinstance(shape, tuple)
        or len(shape) < 1
        or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in shape
        )
        or shape[0] < 1
    ):
        raise ValueError(
            f"`shape` must be a tuple (B, *event) of integers with B >= 1, got {shape!r}"
        )
    return generator.standard_normal(tuple(int(s) for s in shape), dtype=dt)


# -- the rest of the backend contract: calls into the core -----------------------------
# The core runs on CuPy arrays through the Array API; these functions only add the
# backend's checks (CuPy arrays, a GaussianPath), so that every backend exports the
# same names.


def _check_path(path: Any) -> GaussianPath:
    if not isinstance(path, GaussianPath):
        raise TypeError(
            f"`path` must be a flowspec GaussianPath (e.g. fs.GaussianPath(fs.CondOT())), "
            f"got {validation.describe(path)}"
        )
    return path


def sample(path: Any, x0: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.sample` on CuPy arrays: :math:`\alpha_t x_1 + \sigma_t x_0` (eq. 11)."""
    _require_cupy("x0", x0)
    return _check_path(path).sample(x0, x1, t)


def target(path: Any, x0: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.target` on CuPy arrays (the target of eq. 14; eq. 23 for OT)."""
    _require_cupy("x0", x0)
    return _check_path(path).target(x0, x1, t)


def velocity(path: Any, x: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.velocity` on CuPy arrays, Theorem 3 (eq. 15)."""
    _require_cupy("x", x)
    return _check_path(path).velocity(x, x1, t)


def log_prob(path: Any, x: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.log_prob` on CuPy arrays (eq. 10), shape (B,)."""
    _require_cupy("x", x)
    return _check_path(path).log_prob(x, x1, t)


def score(path: Any, x: Array, x1: Array, t: Array | float) -> Array:
    r""":meth:`flowspec.GaussianPath.score` on CuPy arrays (eq. 10)."""
    _require_cupy("x", x)
    return _check_path(path).score(x, x1, t)


def divergence(field: Any, t: Any, x: Any, *args: Any, method: str = "exact") -> Array:
    r"""``divergence(path, x, x1, t)``: :meth:`flowspec.GaussianPath.divergence` (eq. 15) on CuPy.

    CuPy has no automatic differentiation, so the divergence of a field (the
    ``divergence(field, t, x)`` form of the torch and JAX backends) is not available:
    pass a field's divergence to :func:`log_likelihood` as a callable.
    """
    if not isinstance(field, GaussianPath):
        raise TypeError(
            f"`field` must be a GaussianPath on the cupy backend (CuPy has no automatic "
            f"differentiation for a field's divergence), got {validation.describe(field)}"
        )
    if len(args) != 1:
        raise TypeError("`divergence(path, x, x1, t)` takes exactly x, x1 and t")
    if method != "exact":
        raise ValueError(f"`method` must be 'exact' (closed form) for a path, got {method!r}")
    _require_cupy("x", t)
    return field.divergence(t, x, args[0])


def cfm_loss(v: Array, u: Array, reduction: str = "mean") -> Array:
    r""":func:`flowspec.cfm_loss` on CuPy arrays: :math:`\lVert v - u \rVert^2` per sample (eq. 9, 23), reduced."""
    _require_cupy("v", v)
    return _losses.cfm_loss(v, u, reduction=reduction)


def continuity_residual(
    log_prob: Callable[[Array, Array], Array],
    velocity: Callable[[Array, Array], Array],
    t: Array | float,
    x: Array,
) -> Array:
    r""":func:`flowspec.continuity_residual` on CuPy arrays (paper eq. 26, central differences)."""
    _require_cupy("x", x)
    return _continuity.continuity_residual(log_prob, velocity, t, x)


def log_likelihood(
    field: Field,
    x1: Array,
    log_p0: Callable[[Array], Array],
    time_grid: Any,
    method: str = "euler",
    divergence: Callable[[Array, Array], Array] | None = None,
) -> Array:
    r""":func:`flowspec.log_likelihood` on CuPy arrays (paper App. C).

    ``divergence(t, x) -> (B,)`` must be given as a callable: CuPy has no automatic
    differentiation to compute it.
    """
    if not callable(divergence):
        raise TypeError(
            f"`divergence` must be a callable divergence(t, x) on the cupy backend (CuPy has "
            f"no automatic differentiation), got {validation.describe(divergence)}"
        )
    _require_cupy("x1", x1)
    return _likelihood.log_likelihood(
        field, x1, log_p0, time_grid, method=method, divergence=divergence
    )

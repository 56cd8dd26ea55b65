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
- ``marginal_*``: the exact marginal of an empirical data set (paper eq. 6 and 8),
  streamed over the data in chunks with cuBLAS matrix products and a running
  log-sum-exp; no (B, N, D) array is formed.
- :func:`continuity_residual` and :func:`path_continuity_residual`: CuPy has no
  autodiff, so the residual uses analytic spatial parts where given and the
  reference's central differences otherwise.
- :func:`sample_time` and :func:`sample_noise` on an explicit ``cupy.random.Generator``.

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

from .. import validation
from ..continuity import continuity_residual as _reference_residual
from ..ode import _check_state, _grid
from ..typing import Array, Field
from . import _cupy_logic as _logic

__all__ = [
    "continuity_residual",
    "euler",
    "integrate",
    "kernel_source",
    "marginal_denoise",
    "marginal_divergence",
    "marginal_log_prob",
    "marginal_posterior",
    "marginal_score",
    "marginal_velocity",
    "path_continuity_residual",
    "sample_and_target",
    "sample_noise",
    "sample_time",
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

    ``name`` is one of ``"flowspec_sample_and_target"``, ``"flowspec_axpy"``,
    ``"flowspec_heun"``, ``"flowspec_rk4"``.
    """
    if name not in _logic.KERNELS:
        raise ValueError(f"`name` must be one of {tuple(_logic.KERNELS)}, got {name!r}")
    return _logic.KERNELS[name].cuda()


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

    (paper eq. 11 and the x0-form of eq. 13; eq. 22-23 for the OT path). Same
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
    xp = _check_state(field, x0, "euler")
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
    xp = _check_state(field, x0, method)
    _require_cupy("x0", x0)
    grid = _grid(xp, time_grid, x0)
    with x0.device:
        plan = _logic.solver_plan(xp, method, grid, x0)
        return _logic.run_solver(_launch, xp, field, x0, plan, bool(return_path))


# -- exact marginal of an empirical data set -------------------------------------------


def _marginal(quantity: str, path: Any, data: Array, x: Array, t: Any, weights: Any, chunk: Any):
    _require_cupy("x", x)
    xp = array_api_compat.array_namespace(x)
    with x.device:
        return _logic.marginal_quantity(xp, quantity, path, data, x, t, weights, chunk)


_MARGINAL_DOC = r"""{summary}

    For :math:`q = \sum_i q_i \delta_{{x^i}}` (uniform, or ``weights`` normalised) and the
    Gaussian path of ``path``, with posterior weights
    :math:`w_i \propto q_i \exp(-\lVert x - \alpha_t x^i\rVert^2 / 2\sigma_t^2)` (paper eq. 6
    and 8). One streaming pass over the data in chunks of ``chunk`` rows: the squared
    distances by a cuBLAS matrix product on data centred at its mean, a running
    log-sum-exp, and the weighted sums by a second matrix product. Peak extra memory
    is O(B chunk); no (B, N, D) array is formed. In float32 the matrix-product form
    loses about :math:`\epsilon(\lVert x'\rVert^2 + \alpha_t^2\lVert y\rVert^2)/(2\sigma_t^2)` in
    each logit (x', y centred); use float64 where :math:`\sigma_t` is tiny.

    Parameters
    ----------
    path : GaussianPath
    data : cupy.ndarray, shape (N, *event)
    x : cupy.ndarray, shape (B, *event), dtype of ``data``
    t : float or cupy.ndarray, shape () or (B,)
    weights : cupy.ndarray, shape (N,), optional
        Non-negative point weights (normalised here); uniform if omitted.
    chunk : int, optional
        Data rows per chunk; by default one (B, chunk) block holds 2**25 entries.

    Returns
    -------
    {returns}
    """


def marginal_log_prob(path, data, x, t, *, weights=None, chunk=None):
    return _marginal("log_prob", path, data, x, t, weights, chunk)


def marginal_velocity(path, data, x, t, *, weights=None, chunk=None):
    return _marginal("velocity", path, data, x, t, weights, chunk)


def marginal_score(path, data, x, t, *, weights=None, chunk=None):
    return _marginal("score", path, data, x, t, weights, chunk)


def marginal_divergence(path, data, x, t, *, weights=None, chunk=None):
    return _marginal("divergence", path, data, x, t, weights, chunk)


def marginal_denoise(path, data, x, t, *, weights=None, chunk=None):
    return _marginal("denoise", path, data, x, t, weights, chunk)


def marginal_posterior(path, data, x, t, *, weights=None, chunk=None):
    return _marginal("posterior", path, data, x, t, weights, chunk)


marginal_log_prob.__doc__ = _MARGINAL_DOC.format(
    summary=r"The marginal log-density :math:`\log p_t(x) = \log\sum_i q_i\,\mathcal N(x; \alpha_t x^i, \sigma_t^2 I)`.",
    returns="cupy.ndarray, shape (B,)",
)
marginal_velocity.__doc__ = _MARGINAL_DOC.format(
    summary=r"The marginal field :math:`u_t(x) = \frac{\dot\sigma_t}{\sigma_t}(x - \alpha_t \hat x_1) + \dot\alpha_t \hat x_1`, :math:`\hat x_1 = \sum_i w_i x^i`.",
    returns="cupy.ndarray, shape (B, *event)",
)
marginal_score.__doc__ = _MARGINAL_DOC.format(
    summary=r"The marginal score :math:`\nabla_x \log p_t(x) = -(x - \alpha_t \hat x_1)/\sigma_t^2`.",
    returns="cupy.ndarray, shape (B, *event)",
)
marginal_divergence.__doc__ = _MARGINAL_DOC.format(
    summary=r"The divergence :math:`d\,\dot\sigma_t/\sigma_t + (\dot\alpha_t - \alpha_t\dot\sigma_t/\sigma_t)\,\alpha_t\,\mathrm{tr\,Cov}_w(x^i)/\sigma_t^2` of the marginal field.",
    returns="cupy.ndarray, shape (B,)",
)
marginal_denoise.__doc__ = _MARGINAL_DOC.format(
    summary=r"The posterior mean :math:`\hat x_1 = E[x_1 \mid x_t = x] = \sum_i w_i x^i`.",
    returns="cupy.ndarray, shape (B, *event)",
)
marginal_posterior.__doc__ = _MARGINAL_DOC.format(
    summary="The posterior weights :math:`w_i(x, t)`, each row summing to 1.",
    returns="cupy.ndarray, shape (B, N)",
)


# -- continuity ------------------------------------------------------------------------


def continuity_residual(
    log_prob: Callable[[Array, Array], Array],
    velocity: Callable[[Array, Array], Array],
    t: Array | float,
    x: Array,
    *,
    divergence: Callable[[Array, Array], Array] | None = None,
    score: Callable[[Array, Array], Array] | None = None,
) -> Array:
    r"""The log-form continuity residual on CuPy (paper eq. 26).

    .. math:: r = \partial_t \log p_t(x) + \nabla\cdot u_t(x) + u_t(x)\cdot\nabla_x \log p_t(x)

    With neither ``divergence`` nor ``score`` this is the reference
    :func:`flowspec.continuity_residual` (central differences, 2 + 2d evaluations of
    ``log_prob``). CuPy has no autodiff, so where the analytic parts are known they can
    be passed: ``divergence(t, x) -> (B,)`` replaces the differences of ``velocity`` and
    ``score(t, x) -> x-shaped`` those of ``log_prob`` in x. The time derivative stays a
    central difference (step :math:`\epsilon^{1/3}`), so the residual still tests that
    the field moves the density: error about :math:`\epsilon^{2/3}` relative.

    Returns
    -------
    cupy.ndarray, shape (B,)
    """
    _require_cupy("x", x)
    if divergence is None and score is None:
        return _reference_residual(log_prob, velocity, t, x)
    for name, fn in (
        ("log_prob", log_prob),
        ("velocity", velocity),
        ("divergence", divergence),
        ("score", score),
    ):
        if fn is not None and not callable(fn):
            raise TypeError(
                f"`{name}` must be a callable {name}(t, x), got {validation.describe(fn)}"
            )
    xp = validation.namespace(x=x, t=t)
    validation.check_float(xp, "x", x)
    validation.check_batch("x", x)
    return _logic.residual_with_parts(xp, log_prob, velocity, t, x, divergence, score)


def path_continuity_residual(path: Any, x: Array, x1: Array, t: Array | float) -> Array:
    r"""The continuity residual of a conditional path: Theorem 3 checked on the GPU.

    ``log_prob``, ``velocity``, ``score`` and ``divergence`` of ``path`` conditioned on
    ``x1``, the time derivative by a central difference. It vanishes (to about
    :math:`\epsilon^{2/3}` relative) exactly when the schedule's ``d_alpha`` and
    ``d_sigma`` are the derivatives of its ``alpha`` and ``sigma``. ``t`` plus or minus
    :math:`\epsilon^{1/3}` must lie inside the schedule's finite domain.

    Returns
    -------
    cupy.ndarray, shape (B,)
    """
    return continuity_residual(
        lambda tt, xx: path.log_prob(xx, x1, tt),
        lambda tt, xx: path.velocity(xx, x1, tt),
        t,
        x,
        divergence=lambda tt, xx: path.divergence(xx, x1, tt),
        score=lambda tt, xx: path.score(xx, x1, tt),
    )


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
    t_min: float = 0.0,
    t_max: float = 1.0,
) -> Array:
    r"""Times :math:`t \sim U[t_{\min}, t_{\max})`, shape (B,), for the CFM loss (eq. 9).

    Parameters
    ----------
    batch : int
        B >= 1.
    generator : cupy.random.Generator
        Explicit source of randomness.
    dtype : float32 or float64
    t_min, t_max : float
        0 <= t_min < t_max <= 1; e.g. ``t_max = 1 - 1e-5`` as the paper's VP runs.

    Returns
    -------
    cupy.ndarray, shape (B,), on the current device
    """
    _check_generator(generator)
    dt = _check_dtype(dtype)
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ValueError(f"`batch` must be an integer >= 1, got {validation.describe(batch)}")
    lo = validation.real_number("t_min", t_min)
    hi = validation.real_number("t_max", t_max)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(
            f"`t_min` and `t_max` must satisfy 0 <= t_min < t_max <= 1, got {lo!r}, {hi!r}"
        )
    u = generator.random(int(batch), dtype=dt)
    if lo == 0.0 and hi == 1.0:
        return u
    return u * (hi - lo) + lo


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

r"""Framework-free logic of the CuPy backend: kernel sources, their NumPy emulation, plans.

Nothing here imports CuPy, so continuous integration (which has no GPU) exercises the
logic of every fused kernel:

- :class:`KernelSpec` describes one elementwise kernel as a list of assignments
  ``output = expression`` in a tiny language that is valid CUDA C++ *and* valid Python:
  names, ``name[b]`` / ``name[j]`` subscripts, ``T(literal)`` casts, ``+ - * /`` and
  parentheses. :meth:`KernelSpec.cuda` renders the argument lists and loop body of a
  ``cupy.ElementwiseKernel``; :func:`emulate` evaluates the *same* expressions on NumPy
  with the same index arithmetic (``i`` the flat C-order index of the output,
  ``b = i / n`` the sample of a flat element for event size ``n``).
- The solver driver :func:`run_solver` and the fused training step
  :func:`sample_and_target` take a ``launch`` callable, so the CuPy module runs them with
  compiled kernels and the CPU tests run them with :func:`emulate`.
- :func:`marginal_stats` (streaming log-sum-exp over data chunks with matrix products)
  and :func:`residual_with_parts` are written against the Array API namespace and run on
  NumPy and CuPy alike.

The kernels are compiled with ``--fmad=false`` so that ``a * x + b * y`` is rounded
exactly as the reference rounds it (two products, one sum), not contracted into a fused
multiply-add; the fused step is then bit-identical to the Array API path on the same
coefficients.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .. import validation
from ..ode import METHODS
from ..typing import Array

__all__ = [
    "KERNELS",
    "KernelSpec",
    "emulate",
    "marginal_stats",
    "residual_with_parts",
    "run_solver",
    "sample_and_target",
    "solver_plan",
]


#: NVRTC options of every kernel: no multiply-add contraction (see the module docstring).
NVRTC_OPTIONS: tuple[str, ...] = ("--fmad=false",)


@dataclass(frozen=True)
class KernelSpec:
    """One elementwise kernel: typed parameters and ``output = expression`` statements.

    Parameters
    ----------
    name : str
        Kernel name (shows in profilers).
    inputs : tuple of str
        Elementwise arrays of type ``T`` (broadcast against the outputs).
    raw : tuple of str
        Raw arrays of type ``T`` indexed explicitly: ``alpha[b]`` (per sample) or
        ``c[j]`` (per solver step).
    scalars : tuple of str
        ``int64`` scalars: ``n`` (the event size, defines ``b = i / n``) and ``j``.
    outputs : tuple of str
        Arrays of type ``T`` written by the kernel.
    body : tuple of (str, str)
        ``(output, expression)`` pairs, evaluated in order.
    """

    name: str
    inputs: tuple[str, ...]
    raw: tuple[str, ...]
    scalars: tuple[str, ...]
    outputs: tuple[str, ...]
    body: tuple[tuple[str, str], ...]

    def uses_sample_index(self) -> bool:
        return any("[b]" in expr for _, expr in self.body)

    def cuda(self) -> tuple[str, str, str]:
        """``(in_params, out_params, operation)`` for ``cupy.ElementwiseKernel``."""
        params = [f"T {a}" for a in self.inputs]
        params += [f"raw T {a}" for a in self.raw]
        params += [f"int64 {a}" for a in self.scalars]
        out = ", ".join(f"T {a}" for a in self.outputs)
        lines = []
        if self.uses_sample_index():
            lines.append("const ptrdiff_t b = i / n;")
        lines += [f"{target} = {expr};" for target, expr in self.body]
        return ", ".join(params), out, "\n".join(lines)


def _affine(out: str, terms: Sequence[tuple[str, str]], index: str) -> tuple[str, str]:
    """``out = c0[index] * v0 + c1[index] * v1 + ...``, summed left to right."""
    return out, " + ".join(f"{c}[{index}] * {v}" for c, v in terms)


#: The generic affine training step: every schedule supplies (alpha, sigma, d_alpha,
#: d_sigma) per sample and this one kernel forms x_t and the CFM target (eq. 11, 13).
SAMPLE_AND_TARGET = KernelSpec(
    name="flowspec_sample_and_target",
    inputs=("x0", "x1"),
    raw=("alpha", "sigma", "d_alpha", "d_sigma"),
    scalars=("n",),
    outputs=("x_t", "target"),
    body=(
        _affine("x_t", (("alpha", "x1"), ("sigma", "x0")), "b"),
        _affine("target", (("d_alpha", "x1"), ("d_sigma", "x0")), "b"),
    ),
)

#: ``y = x + c[j] * k``: the Euler update (in place with y = x), a Runge-Kutta stage,
#: and the midpoint rule's final update.
AXPY = KernelSpec(
    name="flowspec_axpy",
    inputs=("x", "k"),
    raw=("c",),
    scalars=("j",),
    outputs=("y",),
    body=(("y", "x + c[j] * k"),),
)

#: Heun's final update, ``x + (h/2) * (k1 + k2)`` as in the reference.
HEUN = KernelSpec(
    name="flowspec_heun",
    inputs=("x", "k1", "k2"),
    raw=("c",),
    scalars=("j",),
    outputs=("y",),
    body=(("y", "x + c[j] * (k1 + k2)"),),
)

#: The classical Runge-Kutta final update, ``x + (h/6) * (k1 + 2 k2 + 2 k3 + k4)``.
RK4 = KernelSpec(
    name="flowspec_rk4",
    inputs=("x", "k1", "k2", "k3", "k4"),
    raw=("c",),
    scalars=("j",),
    outputs=("y",),
    body=(("y", "x + c[j] * (k1 + T(2) * k2 + T(2) * k3 + k4)"),),
)

KERNELS: dict[str, KernelSpec] = {spec.name: spec for spec in (SAMPLE_AND_TARGET, AXPY, HEUN, RK4)}

# -- NumPy emulation of cupy.ElementwiseKernel -----------------------------------------


def _evaluate(node: ast.AST, env: dict[str, Any], dtype: Any) -> Any:
    """Evaluate the shared C++/Python expression subset, rejecting anything else."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, env, dtype)
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, env, dtype)
        right = _evaluate(node.right, env, dtype)
        ops = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}
        if type(node.op) not in ops:
            raise ValueError(f"operator {type(node.op).__name__} is not in the kernel language")
        return ops[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return np.negative(_evaluate(node.operand, env, dtype))
    if isinstance(node, ast.Name):
        return env[node.id]
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and isinstance(node.slice, ast.Name)
        and node.slice.id in ("b", "j")
    ):
        return env[node.value.id][env[node.slice.id]]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "T"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and not node.keywords
    ):
        return dtype.type(node.args[0].value)
    raise ValueError(f"`{ast.dump(node)}` is not in the kernel language")


def emulate(spec: KernelSpec, *args: Any, out: Sequence[np.ndarray] | None = None) -> Any:
    """Run ``spec`` on NumPy arrays with ``cupy.ElementwiseKernel`` semantics.

    Arguments follow the kernel's parameter order (inputs, raw, scalars), then the
    outputs may be given in ``out`` (written in place, possibly aliasing an input, as
    with CuPy). Elementwise inputs are broadcast to the output shape and read at the
    flat C-order index ``i``; raw arrays are read at ``b = i // n`` or ``j``; each
    statement is evaluated on whole arrays in the kernel's order, which equals the
    per-element loop because statement k reads only inputs and earlier outputs at
    the same ``i``. Returns the output (a tuple when there are several).
    """
    names = spec.inputs + spec.raw + spec.scalars
    if len(args) != len(names):
        raise TypeError(f"{spec.name} takes {len(names)} arguments {names}, got {len(args)}")
    env = dict(zip(names, args, strict=True))
    arrays = [env[a] for a in spec.inputs]
    dtype = arrays[0].dtype
    for name in spec.inputs + spec.raw:
        if env[name].dtype != dtype:
            raise TypeError(f"`{name}` must have dtype {dtype} (type T), got {env[name].dtype}")
    if out is None:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        out = [np.empty(shape, dtype=dtype) for _ in spec.outputs]
    shape = out[0].shape
    size = math.prod(shape)
    flat = {a: np.broadcast_to(env[a], shape).reshape(-1).copy() for a in spec.inputs}
    # copies: an output that aliases an input is read before it is written, as in the
    # per-element loop of the kernel.
    env.update(flat)
    for name, target in zip(spec.outputs, out, strict=True):
        env[name] = target.reshape(-1).copy()
    if spec.uses_sample_index():
        env["b"] = np.arange(size, dtype=np.int64) // env["n"]
    for target, expr in spec.body:
        value = _evaluate(ast.parse(expr, mode="eval"), env, dtype)
        env[target] = np.broadcast_to(np.asarray(value, dtype=dtype), (size,))
    for name, target in zip(spec.outputs, out, strict=True):
        target[...] = env[name].reshape(shape)
    return out[0] if len(out) == 1 else tuple(out)


# -- the fused training step ----------------------------------------------------------

Launch = Callable[..., Any]


def per_sample(xp: Any, value: Any, batch: int, like: Array) -> Array:
    """A coefficient (array of shape (B, 1, ..., 1), 0-d, or number) as a contiguous (B,)."""
    if not array_api_compat.is_array_api_obj(value):
        return xp.full((batch,), float(value), dtype=like.dtype, device=validation.device(like))
    value = xp.astype(value, like.dtype, copy=False)
    if value.ndim == 0 or math.prod(int(s) for s in value.shape) == 1:
        value = xp.reshape(value, (1,))
    value = xp.reshape(value, (-1,))
    if int(value.shape[0]) != batch:
        value = xp.broadcast_to(value, (batch,))
    return xp.asarray(value, copy=True) if _strided(value) else value


def _strided(value: Array) -> bool:
    strides = getattr(value, "strides", None)
    return strides is not None and value.ndim == 1 and strides[0] != value.itemsize


def sample_and_target(launch: Launch, path: Any, x0: Array, x1: Array, t: Any) -> Any:
    """Validate like ``path.sample_and_target`` and run the fused kernel through ``launch``."""
    from ..paths import GaussianPath

    if not isinstance(path, GaussianPath):
        raise TypeError(f"`path` must be a flowspec GaussianPath, got {validation.describe(path)}")
    xp, c = path.prepare("x0", x0, "x1", x1, t)
    batch = int(x0.shape[0])
    coefficients = [per_sample(xp, v, batch, x0) for v in c]
    n = max(validation.event_size(x0), 1)
    return launch(SAMPLE_AND_TARGET, x0, x1, *coefficients, n)


# -- fixed-step solvers with reused buffers --------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything a solver needs, computed once before the loop.

    ``times[j, s]`` is the time of stage s of step j and ``coef[m][j]`` the step
    coefficient m of step j (arrays of x's namespace and dtype, one upload in all).
    """

    method: str
    steps: int
    times: Array
    coef: tuple[Array, ...]


def solver_plan(xp: Any, method: str, grid: list[Any], like: Array) -> Plan:
    """Stage times and step coefficients, rounded exactly as the reference rounds them.

    ``grid`` is the reference's grid: a list of Python floats (host grid, arithmetic in
    float64 then rounded to x's dtype at use) or of 0-d arrays (device grid, arithmetic
    in x's dtype).
    """
    steps = len(grid) - 1
    dev = validation.device(like)
    if all(isinstance(g, float) for g in grid):
        t = np.asarray(grid[:-1], dtype=np.float64)
        h = np.diff(np.asarray(grid, dtype=np.float64))
        half = 0.5 * h
    else:
        g = xp.stack(grid)
        t, h = g[:-1], g[1:] - g[:-1]
        half = 0.5 * h
    if method == "euler":
        times, coef = [t], [h]
    elif method == "midpoint":
        times, coef = [t, t + half], [half, h]
    elif method == "heun":
        times, coef = [t, t + h], [h, half]
    else:
        times, coef = [t, t + half, t + h], [half, h, h / 6.0]
    if isinstance(t, np.ndarray):
        times_arr = xp.asarray(np.stack(times, axis=1).astype(like.dtype), device=dev)
        coef_arr = xp.asarray(np.stack(coef).astype(like.dtype), device=dev)
    else:
        times_arr = xp.stack(times, axis=1)
        coef_arr = xp.stack(coef)
    return Plan(method, steps, times_arr, tuple(coef_arr[m] for m in range(len(coef))))


def euler_plan(xp: Any, t0: Any, t1: Any, steps: Any, like: Array) -> Plan:
    """The reference Euler's times t0 + k h (never accumulated) and its constant h."""
    ts, h = validation.euler_times(steps, t0, t1)
    steps = len(ts)
    times = np.asarray(ts, dtype=np.float64)[:, None]
    dev = validation.device(like)
    times_arr = xp.asarray(times.astype(like.dtype), device=dev)
    coef = xp.asarray(np.full((1, steps), h).astype(like.dtype), device=dev)
    return Plan("euler", steps, times_arr, (coef[0],))


def _overlaps(a: Array, b: Array) -> bool:
    """Whether two arrays may share memory (bounds check on the data pointers)."""
    if a is b:
        return True
    pa, pb = _pointer(a), _pointer(b)
    if pa is None or pb is None:
        return False
    return pa < pb + max(_nbytes(b), 1) and pb < pa + max(_nbytes(a), 1)


def _pointer(a: Array) -> int | None:
    data = getattr(a, "data", None)
    ptr = getattr(data, "ptr", None)  # CuPy
    if ptr is not None:
        return int(ptr)
    iface = getattr(a, "__array_interface__", None)  # NumPy
    return int(iface["data"][0]) if iface is not None else None


def _nbytes(a: Array) -> int:
    return int(getattr(a, "nbytes", 0))


def run_solver(
    launch: Launch,
    xp: Any,
    field: Callable[[Array, Array], Array],
    x0: Array,
    plan: Plan,
    return_path: bool,
) -> Array:
    """Integrate with preallocated buffers: state (or the whole path), one stage, one time.

    Per step the only new arrays are the field's own outputs (and, if one of them
    aliases the stage buffer, a copy of it, since the stage is overwritten before the
    output is last read).
    """
    batch = int(x0.shape[0])
    shape = tuple(x0.shape)
    dev = validation.device(x0)
    tb = xp.empty((batch,), dtype=x0.dtype, device=dev)
    stage = None if plan.method == "euler" else xp.empty_like(x0)
    if return_path:
        out = xp.empty((plan.steps + 1, *shape), dtype=x0.dtype, device=dev)
        out[0, ...] = x0
    else:
        x = xp.asarray(x0, copy=True)

    def call(j: int, s: int, state: Array) -> Array:
        tb[...] = plan.times[j, s]
        v = validation.check_output("field(t, x)", field(tb, state), xp, shape, x0.dtype)
        if stage is not None and _overlaps(v, stage):
            v = xp.asarray(v, copy=True)
        return v

    c = plan.coef
    for j in range(plan.steps):
        if return_path:
            x, y = out[j, ...], out[j + 1, ...]
        else:
            y = x
        k1 = call(j, 0, x)
        if plan.method == "euler":
            launch(AXPY, x, k1, c[0], j, out=(y,))
        elif plan.method == "midpoint":
            launch(AXPY, x, k1, c[0], j, out=(stage,))
            k2 = call(j, 1, stage)
            launch(AXPY, x, k2, c[1], j, out=(y,))
        elif plan.method == "heun":
            launch(AXPY, x, k1, c[0], j, out=(stage,))
            k2 = call(j, 1, stage)
            launch(HEUN, x, k1, k2, c[1], j, out=(y,))
        else:
            launch(AXPY, x, k1, c[0], j, out=(stage,))
            k2 = call(j, 1, stage)
            launch(AXPY, x, k2, c[0], j, out=(stage,))
            k3 = call(j, 1, stage)
            launch(AXPY, x, k3, c[1], j, out=(stage,))
            k4 = call(j, 2, stage)
            launch(RK4, x, k1, k2, k3, k4, c[2], j, out=(y,))
    return out if return_path else x


def check_method(method: Any) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"`method` must be one of {tuple(METHODS)}, got {method!r}")
    return method


# -- the exact marginal of an empirical data set, streamed -----------------------------


@dataclass(frozen=True)
class MarginalStats:
    """Streaming results for x of shape (B, D), data centred at ``shift``.

    ``lse``: log sum_i q_i exp(-|x - alpha x1_i|^2 / (2 sigma^2)), shape (B,);
    ``mean_c``: posterior mean of x1 - shift, shape (B, D); ``var``: posterior trace of
    the covariance of x1, shape (B,); ``shift``: (D,); ``xc`` = x - alpha shift.
    """

    lse: Array
    mean_c: Array
    var: Array
    shift: Array
    xc: Array


def default_chunk(batch: int, n: int, budget_elements: int = 1 << 25) -> int:
    """Data rows per chunk so that one (B, chunk) logit block holds ``budget_elements``."""
    return max(1, min(n, budget_elements // max(batch, 1)))


def log_weights(xp: Any, weights: Array | None, n: int, like: Array) -> Array | None:
    """log q_i for normalised weights, or None for the uniform 1/N (added at the end)."""
    if weights is None:
        return None
    return xp.log(weights) - xp.log(xp.sum(weights))


def marginal_stats(
    xp: Any,
    x: Array,
    data: Array,
    alpha: Array,
    sigma: Array,
    logq: Array | None,
    chunk: int,
    need_var: bool,
) -> MarginalStats:
    """One pass over the data in chunks with a running log-sum-exp (online softmax).

    ``x``: (B, D); ``data``: (N, D); ``alpha``, ``sigma``: (B, 1). The squared
    distances use the matrix-product form |x'|^2 - 2 alpha x'.y + alpha^2 |y|^2 on data
    centred at its mean (x' = x - alpha mean), which shrinks the terms that cancel;
    the result is clamped at 0 (a squared distance). Peak extra memory is O(B chunk).
    """
    n = int(data.shape[0])
    shift = xp.mean(data, axis=0)
    yc = data - shift
    xc = x - alpha * shift
    xx = xp.sum(xc * xc, axis=1, keepdims=True)
    inv = 1.0 / (2.0 * sigma * sigma)
    run_max = s0 = s1 = s2 = None
    for start in range(0, n, chunk):
        y = yc[start : start + chunk, ...]
        yy = xp.sum(y * y, axis=1)
        sq = xx - 2.0 * alpha * xp.matmul(xc, xp.matrix_transpose(y)) + (alpha * alpha) * yy
        logits = -xp.maximum(sq, xp.zeros_like(sq)) * inv
        if logq is not None:
            logits = logits + logq[start : start + chunk]
        block_max = xp.max(logits, axis=1, keepdims=True)
        if run_max is None:
            new_max = block_max
            p = xp.exp(logits - new_max)
            s0 = xp.sum(p, axis=1, keepdims=True)
            s1 = xp.matmul(p, y)
            s2 = xp.sum(p * yy, axis=1, keepdims=True) if need_var else None
        else:
            new_max = xp.maximum(run_max, block_max)
            scale = xp.exp(run_max - new_max)
            p = xp.exp(logits - new_max)
            s0 = s0 * scale + xp.sum(p, axis=1, keepdims=True)
            s1 = s1 * scale + xp.matmul(p, y)
            if need_var:
                s2 = s2 * scale + xp.sum(p * yy, axis=1, keepdims=True)
        run_max = new_max
    lse = xp.reshape(run_max + xp.log(s0), (-1,))
    if logq is None:
        lse = lse - math.log(n)
    mean_c = s1 / s0
    if need_var:
        second = xp.reshape(s2 / s0, (-1,))
        var = second - xp.sum(mean_c * mean_c, axis=1)
        var = xp.maximum(var, xp.zeros_like(var))  # a variance; rounding may go below 0
    else:
        var = None
    return MarginalStats(lse=lse, mean_c=mean_c, var=var, shift=shift, xc=xc)


def marginal_quantity(
    xp: Any,
    quantity: str,
    path: Any,
    data: Array,
    x: Array,
    t: Any,
    weights: Array | None,
    chunk: int | None,
) -> Array:
    """``log_prob``, ``velocity``, ``score``, ``divergence``, ``denoise`` or ``posterior``."""
    from ..paths import GaussianPath

    if not isinstance(path, GaussianPath):
        raise TypeError(f"`path` must be a flowspec GaussianPath, got {validation.describe(path)}")
    xp2 = validation.namespace(x=x, data=data, t=t, weights=weights)
    if xp2 is not xp:
        raise TypeError(
            f"`x` must be an array of this backend's library, got {validation.describe(x)}"
        )
    validation.check_float(xp, "data", data)
    validation.check_float(xp, "x", x, like=("data", data))
    validation.check_batch("x", x)
    if data.ndim < 1 or tuple(data.shape[1:]) != tuple(x.shape[1:]) or int(data.shape[0]) < 1:
        raise ValueError(
            f"`data` must have shape (N, *event) with N >= 1 and the event shape of `x` "
            f"{tuple(x.shape[1:])}, got {tuple(data.shape)}"
        )
    n = int(data.shape[0])
    if weights is not None:
        validation.check_float(xp, "weights", weights, like=("data", data))
        if tuple(weights.shape) != (n,):
            raise ValueError(f"`weights` must have shape (N,) = {(n,)}, got {tuple(weights.shape)}")
    if chunk is None:
        chunk = default_chunk(int(x.shape[0]), n)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"`chunk` must be an integer >= 1, got {validation.describe(chunk)}")
    batch, d = int(x.shape[0]), validation.event_size(x)
    tt = validation.time_array(xp, t, x)
    c = path.schedule.arrays(xp, tt)
    col = [xp.reshape(per_sample(xp, v, batch, x), (batch, 1)) for v in c]
    alpha, sigma, d_alpha, d_sigma = col
    xf = xp.reshape(x, (batch, d))
    yf = xp.reshape(data, (n, d))
    logq = log_weights(xp, weights, n, x)
    if quantity == "posterior":
        stats = marginal_stats(xp, xf, yf, alpha, sigma, logq, chunk, need_var=False)
        blocks = []
        inv = 1.0 / (2.0 * sigma * sigma)
        xx = xp.sum(stats.xc * stats.xc, axis=1, keepdims=True)
        lse = xp.reshape(stats.lse, (batch, 1))
        for start in range(0, n, chunk):
            y = yf[start : start + chunk, ...] - stats.shift
            yy = xp.sum(y * y, axis=1)
            sq = (
                xx
                - 2.0 * alpha * xp.matmul(stats.xc, xp.matrix_transpose(y))
                + (alpha * alpha) * yy
            )
            logits = -xp.maximum(sq, xp.zeros_like(sq)) * inv
            logits = logits + (logq[start : start + chunk] if logq is not None else -math.log(n))
            blocks.append(xp.exp(logits - lse))
        return xp.concat(blocks, axis=1)
    stats = marginal_stats(xp, xf, yf, alpha, sigma, logq, chunk, need_var=quantity == "divergence")
    if quantity == "log_prob":
        s = xp.reshape(sigma, (batch,))
        return stats.lse - d * xp.log(s) - 0.5 * d * math.log(2.0 * math.pi)
    residual = stats.xc - alpha * stats.mean_c  # x - alpha E[x1 | x]
    if quantity == "denoise":
        out = stats.mean_c + stats.shift
    elif quantity == "score":
        out = -residual / (sigma * sigma)
    elif quantity == "velocity":
        out = (d_sigma / sigma) * residual + d_alpha * (stats.mean_c + stats.shift)
    elif quantity == "divergence":
        ratio = xp.reshape(d_sigma / sigma, (batch,))
        gain = xp.reshape((d_alpha - alpha * d_sigma / sigma) * alpha / (sigma * sigma), (batch,))
        return d * ratio + gain * stats.var
    else:  # pragma: no cover - internal
        raise AssertionError(quantity)
    return xp.reshape(out, tuple(x.shape))


# -- continuity residual with analytic parts -------------------------------------------


def residual_with_parts(
    xp: Any,
    log_prob: Callable[[Array, Array], Array],
    velocity: Callable[[Array, Array], Array],
    t: Any,
    x: Array,
    divergence: Callable[[Array, Array], Array] | None,
    score: Callable[[Array, Array], Array] | None,
) -> Array:
    r"""The log-form continuity residual with analytic spatial parts where given.

    :math:`\partial_t \log p` is always a central difference in t with the reference's
    step :math:`\epsilon^{1/3}`, so a wrong :math:`\dot\alpha_t` or :math:`\dot\sigma_t`
    shows up. The divergence of ``velocity`` and the score are taken from
    ``divergence(t, x) -> (B,)`` and ``score(t, x) -> x-shaped`` where given, otherwise
    by the reference's central differences in x (step
    :math:`\epsilon^{1/3}\max(1, \lVert x\rVert_\infty)` per sample).
    """
    batch = int(x.shape[0])
    shape = tuple(x.shape)
    tb = xp.reshape(validation.time_array(xp, t, x), (batch,))
    h = float(xp.finfo(x.dtype).eps) ** (1.0 / 3.0)

    def lp(tt: Array, xx: Array) -> Array:
        return validation.check_output("log_prob(t, x)", log_prob(tt, xx), xp, (batch,), x.dtype)

    def vel(tt: Array, xx: Array) -> Array:
        return validation.check_output("velocity(t, x)", velocity(tt, xx), xp, shape, x.dtype)

    t_plus, t_minus = tb + h, tb - h
    dt_log_p = (lp(t_plus, x) - lp(t_minus, x)) / (t_plus - t_minus)
    u = vel(tb, x)
    d = validation.event_size(x)
    u_flat = xp.reshape(u, (batch, d))
    if divergence is not None:
        div = validation.check_output("divergence(t, x)", divergence(tb, x), xp, (batch,), x.dtype)
    if score is not None:
        g = validation.check_output("score(t, x)", score(tb, x), xp, shape, x.dtype)
        transport = xp.sum(u_flat * xp.reshape(g, (batch, d)), axis=1)
    if divergence is None or score is None:
        flat = xp.reshape(x, (batch, d))
        scale = xp.max(xp.abs(flat), axis=1)
        step = h * xp.where(scale > 1.0, scale, xp.ones_like(scale))
        step_col = xp.reshape(step, (batch,) + (1,) * (x.ndim - 1))
        index = xp.arange(d, device=validation.device(x))
        fd_div = xp.zeros_like(tb)
        fd_transport = xp.zeros_like(tb)
        for i in range(d):
            unit = xp.reshape(xp.astype(index == i, x.dtype), shape[1:])
            x_plus, x_minus = x + step_col * unit, x - step_col * unit
            width = xp.reshape(x_plus - x_minus, (batch, d))[:, i]
            if divergence is None:
                du = xp.reshape(vel(tb, x_plus) - vel(tb, x_minus), (batch, d))[:, i]
                fd_div = fd_div + du / width
            if score is None:
                grad_i = (lp(tb, x_plus) - lp(tb, x_minus)) / width
                fd_transport = fd_transport + u_flat[:, i] * grad_i
        if divergence is None:
            div = fd_div
        if score is None:
            transport = fd_transport
    return dt_log_p + div + transport

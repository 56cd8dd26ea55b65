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
- What the Array API already expresses is not here: the exact marginal and the
  continuity residual run on CuPy arrays through the core
  (:class:`flowspec.EmpiricalMarginal`, :func:`flowspec.continuity_residual`).

The kernels are compiled with ``--fmad=false`` so that ``a * x + b * y`` is rounded
exactly as the reference rounds it (two products, one sum), not contracted into a fused
multiply-add; the fused step is then bit-identical to the Array API path on the same
coefficients.
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .. import validation
from ..tableaus import TABLEAUS, fraction, tableau
from ..typing import Array

__all__ = [
    "KERNELS",
    "KernelSpec",
    "emulate",
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


def _literal(w: float) -> str:
    return f"T({int(w)})" if float(w).is_integer() else f"T({float(w)!r})"


@functools.cache
def row_kernel(weights: tuple[float, ...]) -> KernelSpec:
    """The kernel of one tableau row: ``y = x + c[j] * (w_1 k1 + w_2 k2 + ...)``.

    ``weights`` are the row's non-zero weights (:mod:`flowspec.tableaus`); the sum runs
    left to right, a weight of one is not multiplied, exactly as
    :func:`flowspec.tableaus.weighted_sum` forms it. ``c[j]`` is the row's factor times
    the step h of step ``j``.
    """
    if not weights or any(w == 0.0 for w in weights):
        raise ValueError(f"`weights` must be the non-zero weights of a row, got {weights!r}")
    ks = tuple(f"k{m + 1}" if len(weights) > 1 else "k" for m in range(len(weights)))
    terms = [k if w == 1.0 else f"{_literal(w)} * {k}" for w, k in zip(weights, ks, strict=True)]
    if len(terms) == 1 and weights[0] == 1.0:
        name, expr = "flowspec_axpy", "x + c[j] * k"
    else:
        tag = "_".join(str(int(w)) if float(w).is_integer() else repr(w) for w in weights)
        name = "flowspec_row_" + tag.replace(".", "p").replace("-", "m")
        expr = f"x + c[j] * ({' + '.join(terms)})"
    return KernelSpec(
        name=name,
        inputs=("x", *ks),
        raw=("c",),
        scalars=("j",),
        outputs=("y",),
        body=(("y", expr),),
    )


def _nonzero(weights: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(w for w in weights if w != 0.0)


#: ``y = x + c[j] * k``: the Euler update (in place with y = x), a Runge-Kutta stage,
#: and the midpoint rule's final update.
AXPY = row_kernel((1.0,))
#: Heun's final update, ``x + (h/2) * (k1 + k2)`` as in the reference.
HEUN = row_kernel(_nonzero(TABLEAUS["heun"].b.weights))
#: The classical Runge-Kutta final update, ``x + (h/6) * (k1 + 2 k2 + 2 k3 + k4)``.
RK4 = row_kernel(_nonzero(TABLEAUS["rk4"].b.weights))


def kernels() -> dict[str, KernelSpec]:
    """Every kernel by name: the training step and the rows of every tableau."""
    rows = [row_kernel(_nonzero(r.weights)) for tab in TABLEAUS.values() for r in (*tab.a, tab.b)]
    return {spec.name: spec for spec in (SAMPLE_AND_TARGET, *rows)}


KERNELS: dict[str, KernelSpec] = kernels()

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

    ``times[j, s]`` is the time of stage s of step j and ``coef[m][j]`` the factor of
    row m of the tableau (the rows of a, then b) times the step h of step j (arrays of
    x's namespace and dtype, one upload in all).
    """

    method: str
    steps: int
    times: Array
    coef: tuple[Array, ...]


def solver_plan(xp: Any, method: str, grid: list[Any], like: Array) -> Plan:
    """Stage times and row factors of ``method``'s tableau, rounded as the reference rounds them.

    ``grid`` is the reference's grid: a list of Python floats (host grid, arithmetic in
    float64 then rounded to x's dtype at use) or of 0-d arrays (device grid, arithmetic
    in x's dtype).
    """
    tab = tableau(method)
    steps = len(grid) - 1
    dev = validation.device(like)
    if all(isinstance(g, float) for g in grid):
        t = np.asarray(grid[:-1], dtype=np.float64)
        h = np.diff(np.asarray(grid, dtype=np.float64))
    else:
        g = xp.stack(grid)
        t, h = g[:-1], g[1:] - g[:-1]
    times = [t, *(t + fraction(h, c) for c in tab.c)]
    coef = [fraction(h, row.factor) for row in (*tab.a, tab.b)]
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
    tab = tableau(plan.method)
    batch = int(x0.shape[0])
    shape = tuple(x0.shape)
    dev = validation.device(x0)
    tb = xp.empty((batch,), dtype=x0.dtype, device=dev)
    stage = xp.empty_like(x0) if tab.a else None
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

    def row(m: int, weights: tuple[float, ...], ks: list[Array], j: int, y: Array) -> None:
        used = [k for w, k in zip(weights, ks, strict=False) if w != 0.0]
        launch(row_kernel(_nonzero(weights)), x, *used, c[m], j, out=(y,))

    for j in range(plan.steps):
        if return_path:
            x, y = out[j, ...], out[j + 1, ...]
        else:
            y = x
        ks = [call(j, 0, x)]
        for m, a in enumerate(tab.a):
            row(m, a.weights, ks, j, stage)
            ks.append(call(j, m + 1, stage))
        row(len(tab.a), tab.b.weights, ks, j, y)
    return out if return_path else x


def check_method(method: Any) -> str:
    tableau(method)
    return str(method)

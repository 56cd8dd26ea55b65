r"""Couplings of a minibatch: which x0 is paired with which x1.

A coupling :math:`\pi(x_0, x_1)` with marginals the source and the data turns the
paper's path into the coupled path of :mod:`flowspec.coupled_paths`. Each function
here takes one minibatch ``x0`` (B0, *event), ``x1`` (B1, *event) and returns paired
batches (or the plan, or indices); the cost is the squared Euclidean distance over all
event entries, :math:`C_{ij} = \lVert x_0^i - x_1^j \rVert^2`.

=============================  ===============================================================
function                       coupling
=============================  ===============================================================
:func:`independent`            :math:`q(x_0) q(x_1)`: the pairs as drawn (I-CFM, the paper)
:func:`exact_ot_pairs`         the exact minibatch OT plan (OT-CFM): an optimal assignment,
                               a permutation when B0 == B1 (no pair duplicated or lost)
:func:`sinkhorn`               the entropic OT plan by a log-domain Sinkhorn (Array API)
:func:`entropic_pairs`         a partner for each x0 drawn from its row of the entropic plan
:func:`schrodinger_bridge_pairs`  the same with ``reg = 2 sigma**2``: the static Schrödinger
                               bridge of the Brownian motion ``sigma W_t`` (SB-CFM)
=============================  ===============================================================

Randomness is explicit: the functions that draw take uniforms ``u`` in [0, 1) drawn by
the caller (the torch and JAX backends draw them from a ``torch.Generator`` or a JAX
key). The exact assignment is solved on the host by SciPy's
``linear_sum_assignment`` (install the ``ot`` extra): the (B0, B1) cost matrix is
computed in the inputs' namespace, copied to the host, and the indices copied back.

References
----------
Tong et al., "Improving and generalizing flow-based generative models with minibatch
optimal transport", TMLR 2024 (arXiv:2302.00482). Pooladian et al., "Multisample flow
matching", ICML 2023. Cuturi, "Sinkhorn distances", NeurIPS 2013. Schmitzer, "Stabilized sparse scaling
algorithms for entropy regularized transport problems", SIAM J. Sci. Comput. 2019.
"""

from __future__ import annotations

import importlib
import math
import numbers
import warnings
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from . import validation
from .typing import Array

__all__ = [
    "SinkhornResult",
    "cost_matrix",
    "draw_rows",
    "entropic_pairs",
    "exact_ot_indices",
    "exact_ot_pairs",
    "independent",
    "schrodinger_bridge_pairs",
    "sinkhorn",
]


def _pair_inputs(x0: Array, x1: Array, same_batch: bool = False) -> Any:
    xp = validation.namespace(x0=x0, x1=x1)
    validation.check_float(xp, "x0", x0)
    validation.check_float(xp, "x1", x1, like=("x0", x0))
    validation.check_batch("x0", x0)
    validation.check_batch("x1", x1)
    if tuple(x0.shape[1:]) != tuple(x1.shape[1:]):
        raise ValueError(
            f"`x0` and `x1` must have the same event shape: got {tuple(x0.shape)} and "
            f"{tuple(x1.shape)}"
        )
    if int(x0.shape[0]) < 1 or int(x1.shape[0]) < 1:
        raise ValueError(
            f"`x0` and `x1` must hold at least one sample each, got batch sizes "
            f"{int(x0.shape[0])} and {int(x1.shape[0])}"
        )
    if same_batch and int(x0.shape[0]) != int(x1.shape[0]):
        raise ValueError(
            f"`x0` and `x1` must have the same batch size, got {int(x0.shape[0])} and "
            f"{int(x1.shape[0])}"
        )
    if str(validation.device(x0)) != str(validation.device(x1)):
        raise ValueError(
            f"`x0` and `x1` must be on one device, got {validation.device(x0)} and {validation.device(x1)}"
        )
    return xp


def cost_matrix(x0: Array, x1: Array) -> Array:
    r"""The squared Euclidean cost :math:`C_{ij} = \lVert x_0^i - x_1^j \rVert^2`, shape (B0, B1).

    The cost of the couplings below; the OT coupling minimises the expected
    :math:`\lVert x_1 - x_0 \rVert^2`, the kinetic energy of the straight conditional
    paths of eq. 20-22.

    Computed as :math:`\lVert x_0^i\rVert^2 + \lVert x_1^j\rVert^2 - 2 x_0^i \cdot x_1^j`
    (one matrix product, B0 B1 d multiply-adds and no (B0, B1, d) temporary); each
    entry carries a rounding error of about :math:`d\,\epsilon(\lVert x_0^i\rVert^2 +
    \lVert x_1^j\rVert^2)`. Negative rounding residues of equal points are kept as the
    arithmetic gives them (a plan depends on C only up to these few ulps).

    Parameters
    ----------
    x0 : array, shape (B0, *event)
    x1 : array, shape (B1, *event)

    Returns
    -------
    array, shape (B0, B1)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import cost_matrix
    >>> cost_matrix(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[3.0, 4.0]])).tolist()
    [[25.0], [13.0]]
    """
    xp = _pair_inputs(x0, x1)
    return _cost(xp, x0, x1)


def _cost(xp: Any, x0: Array, x1: Array) -> Array:
    a = xp.reshape(x0, (int(x0.shape[0]), -1))
    b = xp.reshape(x1, (int(x1.shape[0]), -1))
    na = xp.sum(a * a, axis=1)
    nb = xp.sum(b * b, axis=1)
    return (na[:, None] + nb[None, :]) - 2.0 * (a @ xp.matrix_transpose(b))


def independent(x0: Array, x1: Array) -> tuple[Array, Array]:
    r"""The independent coupling :math:`q(x_0)\,q(x_1)`: the pairs as drawn, copied.

    The paper's setting: the condition of eq. 6-9 is :math:`x_1 \sim q` with an
    independent :math:`x_0 \sim p`.

    Two independent minibatches are already a draw from the product coupling, so the
    i-th x0 is paired with the i-th x1 (the paper's CFM and torchcfm's I-CFM). The
    outputs are copies (no output aliases an input).

    Parameters
    ----------
    x0, x1 : array, shape (B, *event)

    Returns
    -------
    x0, x1 : array, shape (B, *event)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import independent
    >>> a, b = independent(np.zeros((2, 1)), np.ones((2, 1)))
    >>> a.tolist(), b.tolist()
    ([[0.0], [0.0]], [[1.0], [1.0]])
    """
    xp = _pair_inputs(x0, x1, same_batch=True)
    return xp.asarray(x0, copy=True), xp.asarray(x1, copy=True)


def _to_host(a: Array) -> np.ndarray:
    """``a`` as a NumPy array on the host (a copy from a device), through DLPack."""
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.from_dlpack(a)
    except (BufferError, RuntimeError, TypeError, ValueError):
        return np.from_dlpack(a, device="cpu", copy=True)


def _scipy_assignment() -> Any:
    try:
        module = importlib.import_module("scipy.optimize")
    except ImportError as exc:
        raise ImportError(
            "the exact OT coupling needs SciPy's linear_sum_assignment: install the `ot` "
            "extra (pip install 'flowspec[ot]')"
        ) from exc
    return module.linear_sum_assignment


def exact_ot_indices(x0: Array, x1: Array) -> tuple[Array, Array]:
    r"""An optimal assignment for the squared Euclidean cost: index arrays ``(i, j)``.

    The pairs are the condition :math:`z = (x_0, x_1)` of the marginal path and field
    (eq. 6 and 8 with z in place of :math:`x_1`) and of the CFM loss (eq. 9).

    Solves :math:`\min_\sigma \sum_k C_{i_k \sigma(i_k)}` over one-to-one matchings of
    size :math:`\min(B_0, B_1)`. With B0 == B1 it is the exact minibatch OT plan of
    the uniform marginals (an extreme point of the Birkhoff polytope is a permutation,
    Birkhoff-von Neumann), ``i = arange(B)`` and ``j`` a permutation: every x0 and every
    x1 is used exactly once. With B0 != B1 it is the optimal *partial* matching: each
    sample of the smaller batch is matched to a distinct sample of the larger one
    (the others are left out; this is not the OT plan of uniform marginals, which would
    split mass). ``i`` is increasing.

    The cost matrix is computed in the inputs' namespace and on their device, then
    copied to the host (B0 B1 floats) where SciPy's ``linear_sum_assignment`` (a
    shortest augmenting path method, O(B^3)) solves it; the indices (int64) are copied
    back to the inputs' device. Ties are broken by the solver.

    Parameters
    ----------
    x0 : array, shape (B0, *event)
    x1 : array, shape (B1, *event)

    Returns
    -------
    i, j : int64 arrays, shape (min(B0, B1),), in the inputs' namespace and device

    Raises
    ------
    ImportError
        SciPy is not installed (the ``ot`` extra).
    ValueError
        The cost matrix is not finite (non-finite inputs).

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import exact_ot_indices
    >>> i, j = exact_ot_indices(np.array([[0.0], [10.0]]), np.array([[9.0], [1.0]]))
    >>> i.tolist(), j.tolist()
    ([0, 1], [1, 0])
    """
    xp = _pair_inputs(x0, x1)
    solve = _scipy_assignment()
    cost = _to_host(_cost(xp, x0, x1))
    if not np.all(np.isfinite(cost)):
        raise ValueError("`x0` and `x1` must be finite: their cost matrix has non-finite entries")
    rows, cols = solve(cost)
    dev = validation.device(x0)
    return (
        xp.asarray(np.ascontiguousarray(rows, dtype=np.int64), device=dev),
        xp.asarray(np.ascontiguousarray(cols, dtype=np.int64), device=dev),
    )


def exact_ot_pairs(x0: Array, x1: Array) -> tuple[Array, Array]:
    r"""The pairs of the exact minibatch OT plan: ``(x0[i], x1[j])`` of :func:`exact_ot_indices`.

    The conditions z of eq. 6-9 for OT-CFM.

    With B0 == B1 the output holds every x0 in its place and every x1 exactly once
    (a permutation): the OT-CFM coupling without the duplicates and misses of drawing
    from the plan with replacement.

    Returns
    -------
    x0, x1 : array, shape (min(B0, B1), *event)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import exact_ot_pairs
    >>> a, b = exact_ot_pairs(np.array([[0.0], [10.0]]), np.array([[9.0], [1.0]]))
    >>> a.tolist(), b.tolist()
    ([[0.0], [10.0]], [[1.0], [9.0]])
    """
    i, j = exact_ot_indices(x0, x1)
    xp = array_api_compat.array_namespace(x0)
    return xp.take(x0, i, axis=0), xp.take(x1, j, axis=0)


class SinkhornResult(NamedTuple):
    """The entropic plan and how well it meets its marginals (the result of :func:`sinkhorn`).

    The plan is the coupling :math:`q(z)` of the conditions z in eq. 6-9.

    ``plan`` has shape (B0, B1) and sums to 1; ``error`` (0-d, the plan's dtype) is the
    L1 distance of its row sums to the uniform source marginal (its column sums are
    uniform to rounding after the last half-step); ``iterations`` is the number of
    Sinkhorn iterations run, the warm start's included.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import sinkhorn
    >>> res = sinkhorn(np.array([[0.0], [1.0]]), np.array([[0.0], [1.0]]), reg=1.0)
    >>> res.plan.shape, bool(res.error <= 1e-6), res.iterations > 0
    ((2, 2), True, True)
    """

    plan: Array
    error: Array
    iterations: int


def _positive(name: str, value: Any) -> float:
    v = validation.real_number(name, value)
    if not v > 0.0:
        raise ValueError(f"`{name}` must be > 0, got {v!r}")
    return v


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {validation.describe(value)}")
    return int(value)


def _logsumexp(xp: Any, a: Array, axis: int) -> Array:
    m = xp.max(a, axis=axis, keepdims=True)
    # every row and column of a finite cost has a finite max; exp(a - m) <= 1
    return xp.squeeze(m, axis=axis) + xp.log(xp.sum(xp.exp(a - m), axis=axis))


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
) -> SinkhornResult:
    r"""The entropic OT plan between two minibatches, by a log-domain Sinkhorn.

    A coupling :math:`q(z)` of the conditions of eq. 6-9 (Cuturi 2013; SB-CFM of Tong
    et al. 2024 with ``reg = 2 sigma**2``).

    .. math::
        P^\star = \arg\min_{P \in U(a, b)} \langle P, C\rangle + \varepsilon\,
        \mathrm{KL}(P \,\Vert\, a b^\top), \qquad a = \tfrac1{B_0}\mathbb 1, \;
        b = \tfrac1{B_1}\mathbb 1,

    with :math:`\varepsilon` = ``reg`` and C the squared Euclidean cost. This is POT's
    ``ot.sinkhorn_log(a, b, C, reg)`` convention (its :math:`\langle P, C\rangle -
    \varepsilon H(P)` has the same minimiser on U(a, b)). The iteration updates the
    dual potentials with log-sum-exp, so any ``reg > 0`` is safe from the underflow of
    :math:`e^{-C/\varepsilon}`:

    .. math::
        f_i \leftarrow -\varepsilon \log \sum_j b_j e^{(g_j - C_{ij})/\varepsilon},\quad
        g_j \leftarrow -\varepsilon \log \sum_i a_i e^{(f_i - C_{ij})/\varepsilon},\quad
        P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}.

    Before the iterations at ``reg``, an epsilon-scaling warm start runs
    ``scaling_stages`` stages of ``check_every`` iterations each at regularisations
    decreasing geometrically from the cost's range :math:`\max C - \min C` to ``reg``
    (Schmitzer 2019): the fixed point is the same, reached in far fewer iterations
    when ``reg`` is small against the cost (plain Sinkhorn contracts at a rate that
    degrades like :math:`e^{-\max C / \varepsilon}`).

    Convergence is the L1 error of the row sums, :math:`\sum_i |P_{i\cdot} - a_i|`
    (the column sums are exact after each g update, up to rounding). With a ``tol``,
    it is read on the host every ``check_every`` iterations (one device sync each) and
    the loop stops once it is at most ``tol``; reaching ``max_iter`` first raises
    RuntimeError (``on_failure="raise"``) or warns (``"warn"``) and returns the last
    plan. A non-finite error always raises. With ``tol=None`` nothing is read: exactly
    ``max_iter`` iterations run and the caller checks ``result.error`` (this is the
    form for ``jax.jit`` and ``torch.compile``, where values cannot be read).

    Parameters
    ----------
    x0 : array, shape (B0, *event)
    x1 : array, shape (B1, *event)
    reg : float
        The entropic regularisation :math:`\varepsilon > 0`, in units of the cost.
    tol : float or None
        The L1 marginal error to reach (> 0), or None for a fixed number of iterations.
        In float32, rounding leaves an error of a few 1e-7: ask for 1e-5 or more.
    max_iter : int
        The cap on the iterations at ``reg`` (after the warm start).
    check_every : int
        Iterations between two reads of the error (with a ``tol``).
    on_failure : {"raise", "warn"}
        What reaching ``max_iter`` without convergence does.
    scaling_stages : int
        Stages of the epsilon-scaling warm start (0: none, plain Sinkhorn from zero
        potentials, as POT's ``sinkhorn_log``).

    Returns
    -------
    SinkhornResult
        ``(plan, error, iterations)``.

    Raises
    ------
    RuntimeError
        No convergence within ``max_iter`` (with ``on_failure="raise"``), or a
        non-finite marginal error.
    TypeError
        A ``tol`` under tracing (``jax.jit``), where the error cannot be read.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import sinkhorn
    >>> x0 = np.array([[0.0], [1.0]]); x1 = np.array([[0.1], [0.9]])
    >>> res = sinkhorn(x0, x1, reg=0.05)
    >>> np.round(res.plan, 3).tolist(), bool(res.error <= 1e-6)
    ([[0.5, 0.0], [0.0, 0.5]], True)
    """
    xp = _pair_inputs(x0, x1)
    eps = _positive("reg", reg)
    if tol is not None:
        tol = _positive("tol", tol)
    max_iter = _count("max_iter", max_iter)
    if (
        isinstance(scaling_stages, bool)
        or not isinstance(scaling_stages, numbers.Integral)
        or (scaling_stages < 0)
    ):
        raise ValueError(
            f"`scaling_stages` must be an integer >= 0, got {validation.describe(scaling_stages)}"
        )
    scaling_stages = int(scaling_stages)
    check_every = _count("check_every", check_every)
    if on_failure not in ("raise", "warn"):
        raise ValueError(f"`on_failure` must be 'raise' or 'warn', got {on_failure!r}")
    n0, n1 = int(x0.shape[0]), int(x1.shape[0])
    cost = _cost(xp, x0, x1)
    log_a, log_b = -math.log(n0), -math.log(n1)
    g = xp.zeros((n1,), dtype=x0.dtype, device=validation.device(x0))
    done = 0
    if scaling_stages:
        # epsilon-scaling warm start (potentials in cost units): regs from the cost's
        # range down to reg, geometrically; an array, so nothing is read
        ratio = xp.maximum((xp.max(cost) - xp.min(cost)) / eps, 1.0) ** (1.0 / scaling_stages)
        for s in range(scaling_stages):
            e = eps * ratio ** (scaling_stages - s)
            for _ in range(check_every):
                f = -e * _logsumexp(xp, (g[None, :] - cost) / e + log_b, axis=1)
                g = -e * _logsumexp(xp, (f[:, None] - cost) / e + log_a, axis=0)
                done += 1
        g = g / eps
    scaled = cost / eps  # C / reg, once
    error = None
    for k in range(1, max_iter + 1):
        # potentials in units of reg: f/reg, g/reg
        f = -_logsumexp(xp, g[None, :] - scaled + log_b, axis=1)
        g = -_logsumexp(xp, f[:, None] - scaled + log_a, axis=0)
        done += 1
        if tol is not None and (k % check_every == 0 or k == max_iter):
            error = _row_error(xp, f, g, scaled, log_a, log_b)
            value = _read(error)
            if not math.isfinite(value):
                raise RuntimeError(
                    f"sinkhorn: the marginal error is {value} after {k} iterations (reg={eps!r}, "
                    f"cost in [{float(xp.min(cost))!r}, {float(xp.max(cost))!r}]): the inputs or "
                    f"`reg` give a non-finite plan"
                )
            if value <= tol:
                break
    else:
        if tol is not None:
            msg = (
                f"sinkhorn did not converge: marginal L1 error {_read(error):.3g} > tol={tol!r} "
                f"after max_iter={max_iter} iterations (reg={eps!r}); raise `max_iter`, raise "
                f"`reg`, or loosen `tol`"
            )
            if on_failure == "raise":
                raise RuntimeError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
    log_plan = f[:, None] + g[None, :] - scaled + (log_a + log_b)
    plan = xp.exp(log_plan)
    if error is None:
        error = _row_error(xp, f, g, scaled, log_a, log_b)
    return SinkhornResult(plan, error, done)


def _row_error(xp: Any, f: Array, g: Array, scaled: Array, log_a: float, log_b: float) -> Array:
    rows = xp.exp(_logsumexp(xp, f[:, None] + g[None, :] - scaled + log_b, axis=1) + log_a)
    return xp.sum(xp.abs(rows - math.exp(log_a)))


def _read(error: Array) -> float:
    try:
        return float(error)
    except Exception as exc:  # a tracer (jax.jit) or a lazy value cannot be read
        raise TypeError(
            f"sinkhorn: `tol` needs the marginal error on the host, but it cannot be read "
            f"here ({type(exc).__name__}); under jax.jit or torch.compile pass tol=None and "
            f"check the returned `error`"
        ) from None


def draw_rows(plan: Array, u: Array) -> Array:
    r"""For each row i of a plan, a column j drawn from :math:`P_{ij} / \sum_j P_{ij}`.

    A draw of the conditions z of eq. 6-9 from a plan, one per source sample.

    Inverse-CDF sampling with the caller's uniforms: ``j_i = #{j : c_{ij} <= u_i}`` with
    :math:`c_{ij}` the row's normalised cumulative sum (whose last entry is exactly 1,
    so j < B1; columns of zero mass are never drawn). Each x0 keeps its place and gets
    one partner: the source half of the minibatch is used exactly once. (torchcfm
    instead draws B (i, j) pairs from the flattened plan with replacement, so x0
    samples too are duplicated and missed.)

    Parameters
    ----------
    plan : array, shape (B0, B1)
        Non-negative, every row with positive mass.
    u : array, shape (B0,)
        Uniforms in [0, 1), same namespace and dtype as ``plan``.

    Returns
    -------
    int64 array, shape (B0,)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import draw_rows
    >>> draw_rows(np.array([[0.25, 0.25], [0.0, 0.5]]), np.array([0.7, 0.1])).tolist()
    [1, 1]
    """
    xp = validation.namespace(plan=plan, u=u)
    validation.check_float(xp, "plan", plan)
    validation.check_float(xp, "u", u, like=("plan", plan))
    if plan.ndim != 2:
        raise ValueError(f"`plan` must have shape (B0, B1), got shape {tuple(plan.shape)}")
    if tuple(u.shape) != (int(plan.shape[0]),):
        raise ValueError(
            f"`u` must have shape (B0,) = {(int(plan.shape[0]),)}, got {tuple(u.shape)}"
        )
    if array_api_compat.is_numpy_array(u) and not bool(np.all((u >= 0.0) & (u < 1.0))):
        raise ValueError("`u` must lie in [0, 1)")
    if array_api_compat.is_numpy_array(plan) and not bool(
        np.all(plan >= 0.0) and np.all(np.sum(plan, axis=1) > 0.0)
    ):
        raise ValueError("`plan` must be non-negative with positive mass in every row")
    cdf = xp.cumulative_sum(plan, axis=1)
    cdf = cdf / cdf[:, -1:]
    below = xp.astype(cdf <= u[:, None], xp.int64)
    return xp.sum(below, axis=1)


def entropic_pairs(
    x0: Array, x1: Array, reg: float, u: Array, **sinkhorn_options: Any
) -> tuple[Array, Array]:
    r"""Pairs from the entropic OT plan, drawn by rows: ``(x0, x1[draw_rows(plan, u)])``.

    The conditions z of eq. 6-9 drawn from the entropic plan.

    Each x0 keeps its place; its partner is drawn from its row of the plan of
    :func:`sinkhorn` (``sinkhorn_options`` are passed on). As ``reg -> 0`` the plan
    tends to the exact OT plan and the draw to its permutation.

    Parameters
    ----------
    x0 : array, shape (B0, *event)
    x1 : array, shape (B1, *event)
    reg : float
    u : array, shape (B0,)
        Uniforms in [0, 1).

    Returns
    -------
    x0, x1 : array, shape (B0, *event)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import entropic_pairs
    >>> a, b = entropic_pairs(np.array([[0.0], [1.0]]), np.array([[0.9], [0.1]]), 0.01,
    ...                       np.array([0.5, 0.5]))
    >>> b.tolist()
    [[0.1], [0.9]]
    """
    res = sinkhorn(x0, x1, reg, **sinkhorn_options)
    xp = array_api_compat.array_namespace(x0)
    j = draw_rows(res.plan, u)
    return xp.asarray(x0, copy=True), xp.take(x1, j, axis=0)


def schrodinger_bridge_pairs(
    x0: Array, x1: Array, sigma: float, u: Array, **sinkhorn_options: Any
) -> tuple[Array, Array]:
    r"""Pairs of the static Schrödinger bridge of :math:`\sigma W_t`: :func:`entropic_pairs` with ``reg = 2 sigma**2``.

    The conditions z of eq. 6-9 for SB-CFM.

    The bridge's coupling minimises :math:`\mathrm{KL}(\pi \,\Vert\, q_0 \otimes q_1
    \cdot k)` with the Brownian transition kernel
    :math:`k \propto e^{-\lVert x_1 - x_0\rVert^2 / (2\sigma^2)}` over unit time, i.e.
    :math:`\langle \pi, C\rangle / (2\sigma^2) + \mathrm{KL}(\pi \Vert q_0 \otimes q_1)`:
    the entropic plan with :math:`\varepsilon = 2\sigma^2` (torchcfm's ``reg``). Use
    with ``CoupledPath(CondOT(), BrownianBridgeNoise(sigma))``.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import schrodinger_bridge_pairs
    >>> a, b = schrodinger_bridge_pairs(np.array([[0.0], [1.0]]), np.array([[0.9], [0.1]]),
    ...                                 0.05, np.array([0.5, 0.5]))
    >>> b.tolist()
    [[0.1], [0.9]]
    """
    s = _positive("sigma", sigma)
    return entropic_pairs(x0, x1, 2.0 * s * s, u, **sinkhorn_options)

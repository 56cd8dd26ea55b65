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
``linear_sum_assignment`` or POT's network simplex (install the ``ot`` extra): the
(B0, B1) cost matrix is computed in the inputs' namespace, copied to the host, and the
indices copied back.

References
----------
Tong et al., "Improving and generalizing flow-based generative models with minibatch
optimal transport", TMLR 2024 (arXiv:2302.00482). Pooladian et al., "Multisample flow
matching", ICML 2023. Cuturi, "Sinkhorn distances", NeurIPS 2013. Schmitzer, "Stabilized sparse scaling
algorithms for entropy regularized transport problems", SIAM J. Sci. Comput. 2019.
"""

from __future__ import annotations

import importlib
import importlib.util
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
    "exact_ot_solver",
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


def _solver_cost(xp: Any, x0: Array, x1: Array) -> Array:
    """The cost handed to the assignment solver: that of the *centred* clouds when B0 == B1.

    With every sample of both batches matched once, translating either cloud changes
    ``C_ij`` by a row and a column constant only (``||a - b - s||^2 = ||a - b||^2 - 2 s.a
    + (2 s.b + ||s||^2)``), which adds the same constant to the cost of every permutation:
    the optimal permutations are the same. The solvers' work is not: on clouds whose means
    differ, the shortest augmenting paths of SciPy's solver and the pivots of the network
    simplex multiply (measured up to 11x and 1.7x at B = 1024 in 2-D,
    ``benchmarks/bench_couplings.py``), and the centred entries are smaller, so they carry
    less rounding. A partial matching (B0 != B1) leaves samples of the larger batch out,
    so there the cost is not translated.
    """
    if int(x0.shape[0]) != int(x1.shape[0]):
        return _cost(xp, x0, x1)
    return _cost(xp, x0 - xp.mean(x0, axis=0), x1 - xp.mean(x1, axis=0))


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


_SOLVERS = ("auto", "scipy", "pot")


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the exact OT coupling needs {what}: install the `ot` extra "
            f"(pip install 'flowspec[ot]')"
        ) from exc


def _installed(module: str) -> bool:
    try:  # whether a package is installed, without importing it
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None
        return False


def _resolve_solver(solver: Any, n0: int, n1: int) -> str:
    if solver not in _SOLVERS:
        raise ValueError(f"`solver` must be one of {_SOLVERS}, got {solver!r}")
    if solver == "pot" and n0 != n1:
        raise ValueError(
            f"`solver`='pot' (a permutation from the network simplex) needs equal batch "
            f"sizes, got {n0} and {n1}; use solver='scipy' for a partial matching"
        )
    if solver == "auto":
        # SciPy's solver on the centred cost (see _solver_cost) is at least as fast as
        # the network simplex at every size measured (B = 256, 1024; 2 to 3072 entries
        # per sample, benchmarks/bench_couplings.py): POT only where SciPy is missing
        usable_pot = n0 == n1 and _installed("ot")
        return "pot" if (usable_pot and not _installed("scipy")) else "scipy"
    return str(solver)


def exact_ot_solver(x0: Array, x1: Array, solver: str = "auto") -> str:
    r"""Which assignment solver :func:`exact_ot_indices` runs on these inputs: ``"pot"`` or ``"scipy"``.

    The pairs are the conditions z of eq. 6-9; the solver changes the time, not the
    optimum. ``"auto"`` is ``"scipy"`` (``scipy.optimize.linear_sum_assignment``),
    the faster of the two on the centred cost that :func:`exact_ot_indices` solves, and
    ``"pot"`` (POT's network simplex, ``ot.emd``) only where SciPy is not installed,
    POT is and the batch sizes are equal. Nothing is imported: the packages are looked
    up, not loaded.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import exact_ot_solver
    >>> exact_ot_solver(np.zeros((4, 3, 8, 8)), np.zeros((4, 3, 8, 8)))
    'scipy'
    >>> exact_ot_solver(np.zeros((4, 2)), np.zeros((4, 2)), solver="pot")
    'pot'
    """
    _pair_inputs(x0, x1)
    return _resolve_solver(solver, int(x0.shape[0]), int(x1.shape[0]))


def _pot_permutation(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The optimal permutation of a square cost from POT's network simplex, checked."""
    ot = _import("ot", "POT's network simplex (ot.emd)")
    n = int(cost.shape[0])
    ones = np.ones(n)
    # unit masses (not 1/n): the simplex's flows stay integers, exact in float64, so an
    # optimal vertex is a 0/1 permutation matrix (Birkhoff-von Neumann)
    # the simplex compares reduced costs against an absolute epsilon: on a cost of
    # entries ~1e-279 it stops at a non-optimal vertex. Scaled by a power of two to
    # entries of at most 1 in magnitude (exact: the same optimal permutations)
    cost = np.asarray(cost, dtype=np.float64)
    top = float(np.max(np.abs(cost))) if cost.size else 0.0
    if 0.0 < top < math.inf:
        cost = np.ldexp(cost, -math.frexp(top)[1])
    plan, log = ot.emd(ones, ones, cost, log=True)
    if int(log["result_code"]) != 1:
        raise RuntimeError(
            f"exact OT: POT's network simplex did not reach an optimum "
            f"(result_code {log['result_code']}: {log['warning']}); use solver='scipy'"
        )
    nonzero = plan != 0.0
    if not (
        np.all(plan[nonzero] == 1.0)
        and np.all(np.sum(nonzero, axis=1) == 1)
        and np.all(np.sum(nonzero, axis=0) == 1)
    ):
        raise RuntimeError(
            "exact OT: POT's network simplex returned a plan that is not a permutation "
            "matrix; use solver='scipy'"
        )
    return np.arange(n, dtype=np.int64), np.argmax(plan, axis=1).astype(np.int64)


def exact_ot_indices(x0: Array, x1: Array, *, solver: str = "auto") -> tuple[Array, Array]:
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
    copied to the host (B0 B1 floats) where an exact solver runs; the indices (int64)
    are copied back to the inputs' device. With B0 == B1 the solver is handed the cost
    of the two clouds each centred at its mean, which differs from :func:`cost_matrix`
    by a row and a column constant only (the same optimal permutations) and is solved
    several times faster when the clouds' means differ. Solvers (:func:`exact_ot_solver` says which
    one ``"auto"`` picks):

    - ``"scipy"``: ``scipy.optimize.linear_sum_assignment``, a shortest augmenting
      path method, O(B^3); any B0, B1.
    - ``"pot"``: POT's network simplex ``ot.emd`` with unit masses (B0 == B1 only).
      Its flows stay integers, so the optimal vertex it returns is a permutation
      matrix; that is checked (entries exactly 0 or 1, one per row and column, the
      solver's optimality code), and anything else raises RuntimeError.

    Ties between optimal assignments are broken by the solver, so the two solvers may
    return different permutations of the same (optimal) cost.

    Parameters
    ----------
    x0 : array, shape (B0, *event)
    x1 : array, shape (B1, *event)
    solver : {"auto", "scipy", "pot"}

    Returns
    -------
    i, j : int64 arrays, shape (min(B0, B1),), in the inputs' namespace and device

    Raises
    ------
    ImportError
        The solver's package is not installed (the ``ot`` extra).
    ValueError
        The cost matrix is not finite (non-finite inputs); an unknown ``solver``, or
        ``"pot"`` with B0 != B1.
    RuntimeError
        POT's solver did not return an optimal permutation.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.couplings import exact_ot_indices
    >>> i, j = exact_ot_indices(np.array([[0.0], [10.0]]), np.array([[9.0], [1.0]]))
    >>> i.tolist(), j.tolist()
    ([0, 1], [1, 0])
    """
    xp = _pair_inputs(x0, x1)
    name = _resolve_solver(solver, int(x0.shape[0]), int(x1.shape[0]))
    if name == "scipy":
        solve = _import("scipy.optimize", "SciPy's linear_sum_assignment").linear_sum_assignment
    cost = _to_host(_solver_cost(xp, x0, x1))
    if not np.all(np.isfinite(cost)):
        raise ValueError("`x0` and `x1` must be finite: their cost matrix has non-finite entries")
    rows, cols = solve(cost) if name == "scipy" else _pot_permutation(cost)
    dev = validation.device(x0)
    return (
        xp.asarray(np.ascontiguousarray(rows, dtype=np.int64), device=dev),
        xp.asarray(np.ascontiguousarray(cols, dtype=np.int64), device=dev),
    )


def exact_ot_pairs(x0: Array, x1: Array, *, solver: str = "auto") -> tuple[Array, Array]:
    r"""The pairs of the exact minibatch OT plan: ``(x0[i], x1[j])`` of :func:`exact_ot_indices`.

    The conditions z of eq. 6-9 for OT-CFM.

    With B0 == B1 the output holds every x0 in its place and every x1 exactly once
    (a permutation): the OT-CFM coupling without the duplicates and misses of drawing
    from the plan with replacement. ``solver`` as in :func:`exact_ot_indices`.

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
    i, j = exact_ot_indices(x0, x1, solver=solver)
    xp = array_api_compat.array_namespace(x0)
    return xp.take(x0, i, axis=0), xp.take(x1, j, axis=0)


class SinkhornResult(NamedTuple):
    """The entropic plan and how well it meets its marginals (the result of :func:`sinkhorn`).

    The plan is the coupling :math:`q(z)` of the conditions z in eq. 6-9.

    ``plan`` has shape (B0, B1) and sums to 1; ``error`` (0-d, the plan's dtype) is the
    L1 distance of its row sums to the uniform source marginal (its column sums are
    uniform to rounding after the last half-step); ``iterations`` is the number of
    Sinkhorn iterations run, the warm start's included (a 0-d integer array from
    :func:`flowspec.backends.jax.sinkhorn`, whose count is known only on the device).

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
    iterations: int | Array


def _positive(name: str, value: Any) -> float:
    v = validation.real_number(name, value)
    if not v > 0.0:
        raise ValueError(f"`{name}` must be > 0, got {v!r}")
    return v


def _count(name: str, value: Any) -> int:
    return validation.integer(name, value, 1)


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
    r"""The entropic OT plan between two minibatches, by a stabilised Sinkhorn.

    A coupling :math:`q(z)` of the conditions of eq. 6-9 (Cuturi 2013; SB-CFM of Tong
    et al. 2024 with ``reg = 2 sigma**2``).

    .. math::
        P^\star = \arg\min_{P \in U(a, b)} \langle P, C\rangle + \varepsilon\,
        \mathrm{KL}(P \,\Vert\, a b^\top), \qquad a = \tfrac1{B_0}\mathbb 1, \;
        b = \tfrac1{B_1}\mathbb 1,

    with :math:`\varepsilon` = ``reg`` and C the squared Euclidean cost. This is POT's
    ``ot.sinkhorn_log(a, b, C, reg)`` convention (its :math:`\langle P, C\rangle -
    \varepsilon H(P)` has the same minimiser on U(a, b)). Each iteration updates the
    dual potentials,

    .. math::
        f_i \leftarrow -\varepsilon \log \sum_j b_j e^{(g_j - C_{ij})/\varepsilon},\quad
        g_j \leftarrow -\varepsilon \log \sum_i a_i e^{(f_i - C_{ij})/\varepsilon},\quad
        P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon},

    evaluated in one of two exact forms of the same iteration:

    - with a ``tol`` (values read on the host), the **stabilised scaling** form
      (Schmitzer 2019): the potentials are split as :math:`f + \varepsilon\log u`,
      :math:`g + \varepsilon\log v` with a kernel
      :math:`K_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}`, and an iteration is two
      matrix-vector products, :math:`u = 1/(b \odot K v)`, :math:`v = 1/(a \odot
      K^\top u)`. The scalings are read after every iteration: once one leaves
      :math:`[\tau^{-1/2}, \tau^{1/2}]` they are absorbed into f, g and K is formed
      again (one exponential per entry, by a log-sum-exp f update, so no row of K
      underflows), and an iteration that takes them beyond :math:`[\tau^{-1}, \tau]`
      or to a non-finite value is redone in the log domain. :math:`\tau =
      (\epsilon_{\rm mach} / {\rm tiny})^{1/2}` of the dtype bounds what an
      underflowed kernel entry can carry to a plan entry, :math:`{\rm tiny}\,\tau^2
      = \epsilon_{\rm mach}` times the row's mass.
    - with ``tol=None`` (nothing read: the form for ``jax.jit`` and ``torch.compile``),
      the **log domain**: each half-step a log-sum-exp over the B0 x B1 entries.

    Any ``reg > 0`` is safe from the underflow of :math:`e^{-C/\varepsilon}` in both.

    Before the iterations at ``reg``, an epsilon-scaling warm start runs
    ``scaling_stages`` stages of ``check_every`` iterations each at regularisations
    decreasing geometrically from the cost's range :math:`\max C - \min C` to ``reg``
    (Schmitzer 2019): the fixed point is the same, reached in far fewer iterations
    when ``reg`` is small against the cost (plain Sinkhorn contracts at a rate that
    degrades like :math:`e^{-\max C / \varepsilon}`).

    Convergence is the L1 error of the row sums, :math:`\sum_i |P_{i\cdot} - a_i|`
    (the column sums are exact after each g update, up to rounding). With a ``tol``,
    it is computed every ``check_every`` iterations and the loop stops once it is at
    most ``tol``; reaching ``max_iter`` first raises RuntimeError
    (``on_failure="raise"``) or warns (``"warn"``) and returns the last plan. A
    non-finite error always raises. With ``tol=None`` nothing is read: exactly
    ``max_iter`` iterations run and the caller checks ``result.error``. Under
    ``jax.jit`` with a ``tol``, use :func:`flowspec.backends.jax.sinkhorn` (a
    ``lax.while_loop``).

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
        Iterations between two evaluations of the error (with a ``tol``).
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
        A ``tol`` under tracing (``jax.jit``, ``torch.compile``), where values cannot be
        read.

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
    eps, tol, max_iter, check_every, scaling_stages = _sinkhorn_options(
        reg, tol, max_iter, check_every, on_failure, scaling_stages
    )
    n0, n1 = int(x0.shape[0]), int(x1.shape[0])
    cost = _cost(xp, x0, x1)
    log_a, log_b = -math.log(n0), -math.log(n1)
    if tol is None:
        g, done = _log_warm_start(xp, cost, eps, scaling_stages, check_every)
        scaled = cost / eps  # C / reg, once
        for _ in range(max_iter):
            f, g = _log_iteration(xp, g, scaled, log_a, log_b)
            done += 1
        error = _row_error(xp, f, g, scaled, log_a, log_b)
        return SinkhornResult(_log_plan(xp, f, g, scaled, log_a, log_b), error, done)
    low, high = _read(xp.min(cost)), _read(xp.max(cost))  # tracing: a TypeError here
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("`x0` and `x1` must be finite: their cost matrix has non-finite entries")
    state = _Scaling(xp, cost, n0, n1)
    done = 0
    if scaling_stages:
        span = high - low
        ratio = max(span / eps, 1.0) ** (1.0 / scaling_stages)
        for k in range(scaling_stages):
            state.run(eps * ratio ** (scaling_stages - k), check_every)
            done += check_every
    error = None
    k = 0
    while k < max_iter:
        steps = min(check_every, max_iter - k)
        error = state.run(eps, steps, with_error=True)
        k += steps
        value = _read(error)
        _check_outcome(value, k, tol=tol, max_iter=max_iter, reg=eps, on_failure=on_failure)
        if value <= tol:
            break
    assert error is not None  # max_iter >= 1
    return SinkhornResult(state.plan(), error, done + k)


def _check_outcome(
    value: float, k: int, *, tol: float, max_iter: int, reg: float, on_failure: str
) -> None:
    """Raise on a non-finite marginal error; raise or warn at ``max_iter`` above ``tol``."""
    if not math.isfinite(value):
        raise RuntimeError(
            f"sinkhorn: the marginal error is {value} after {k} iterations (reg={reg!r}): the "
            f"inputs or `reg` give a non-finite plan"
        )
    if k >= max_iter and not value <= tol:
        msg = (
            f"sinkhorn did not converge: marginal L1 error {value:.3g} > tol={tol!r} after "
            f"max_iter={max_iter} iterations (reg={reg!r}); raise `max_iter`, raise `reg`, "
            f"or loosen `tol`"
        )
        if on_failure == "raise":
            raise RuntimeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _sinkhorn_options(
    reg: Any, tol: Any, max_iter: Any, check_every: Any, on_failure: Any, scaling_stages: Any
) -> tuple[float, float | None, int, int, int]:
    """Validated ``(reg, tol, max_iter, check_every, scaling_stages)`` of a Sinkhorn call."""
    eps = _positive("reg", reg)
    tol = None if tol is None else _positive("tol", tol)
    if on_failure not in ("raise", "warn"):
        raise ValueError(f"`on_failure` must be 'raise' or 'warn', got {on_failure!r}")
    stages = scaling_stages
    if isinstance(stages, bool) or not isinstance(stages, numbers.Integral) or stages < 0:
        raise ValueError(
            f"`scaling_stages` must be an integer >= 0, got {validation.describe(stages)}"
        )
    return (
        eps,
        tol,
        _count("max_iter", max_iter),
        _count("check_every", check_every),
        int(stages),
    )


# ---- the log domain: traceable, nothing read -------------------------------------------
def _log_warm_start(
    xp: Any, cost: Array, eps: float, stages: int, per_stage: int
) -> tuple[Array, int]:
    """The epsilon-scaling warm start in the log domain: g / reg and the iterations run."""
    g = xp.zeros((int(cost.shape[1]),), dtype=cost.dtype, device=validation.device(cost))
    if not stages:
        return g, 0
    n0, n1 = int(cost.shape[0]), int(cost.shape[1])
    log_a, log_b = -math.log(n0), -math.log(n1)
    # potentials in cost units; regs from the cost's range down to reg, geometrically;
    # an array, so nothing is read
    ratio = xp.maximum((xp.max(cost) - xp.min(cost)) / eps, 1.0) ** (1.0 / stages)
    for s in range(stages):
        e = eps * ratio ** (stages - s)
        for _ in range(per_stage):
            f = -e * _logsumexp(xp, (g[None, :] - cost) / e + log_b, axis=1)
            g = -e * _logsumexp(xp, (f[:, None] - cost) / e + log_a, axis=0)
    return g / eps, stages * per_stage


def _log_iteration(
    xp: Any, g: Array, scaled: Array, log_a: float, log_b: float
) -> tuple[Array, Array]:
    """One Sinkhorn iteration on the potentials in units of reg (``scaled`` = C / reg)."""
    f = -_logsumexp(xp, g[None, :] - scaled + log_b, axis=1)
    g = -_logsumexp(xp, f[:, None] - scaled + log_a, axis=0)
    return f, g


def _log_plan(xp: Any, f: Array, g: Array, scaled: Array, log_a: float, log_b: float) -> Array:
    return xp.exp(f[:, None] + g[None, :] - scaled + (log_a + log_b))


def _row_error(xp: Any, f: Array, g: Array, scaled: Array, log_a: float, log_b: float) -> Array:
    rows = xp.exp(_logsumexp(xp, f[:, None] + g[None, :] - scaled + log_b, axis=1) + log_a)
    return xp.sum(xp.abs(rows - math.exp(log_a)))


# ---- the stabilised scaling form: two matrix-vector products an iteration ---------------
class _Scaling:
    """Sinkhorn's state as absorbed potentials ``f, g`` (cost units), kernel, scalings.

    The effective potentials are ``f + e log u`` and ``g + e log v`` and the kernel
    ``K = exp((f_i + g_j - C_ij) / e)``; ``K is None`` means "form it at the next f
    update". The plan is ``a b u_i K_ij v_j``.
    """

    def __init__(self, xp: Any, cost: Array, n0: int, n1: int) -> None:
        self.xp, self.cost = xp, cost
        self.a, self.b = 1.0 / n0, 1.0 / n1
        self.log_a, self.log_b = -math.log(n0), -math.log(n1)
        dev = validation.device(cost)
        self.f = xp.zeros((n0,), dtype=cost.dtype, device=dev)
        self.g = xp.zeros((n1,), dtype=cost.dtype, device=dev)
        self.u = xp.ones((n0,), dtype=cost.dtype, device=dev)
        self.v = xp.ones((n1,), dtype=cost.dtype, device=dev)
        self.K: Array | None = None
        self.e = math.nan
        self.kv: Array | None = None  # K @ v, kept from the error for the next f update
        info = xp.finfo(cost.dtype)
        self.tiny = float(info.smallest_normal)
        # the scalings' bound tau: tiny * tau**2 = eps (see sinkhorn's docstring)
        self.bound = 0.5 * math.log(float(info.eps) / float(info.smallest_normal))

    def _absorbed(self, pot: Array, axis: int) -> tuple[Array, Array]:
        """The exact log-domain update of the potential along ``axis`` given the other one.

        ``axis=1``: f from ``pot = g``; ``axis=0``: g from ``pot = f``. Returns it and the
        kernel of both, normalised along ``axis`` (``sum b K = 1`` per row, or
        ``sum a K = 1`` per column), so none of its rows (columns) underflows.
        """
        xp, e = self.xp, self.e
        m = ((pot[None, :] if axis == 1 else pot[:, None]) - self.cost) / e
        top = xp.max(m, axis=axis, keepdims=True)
        big = xp.exp(m - top)
        total = xp.sum(big, axis=axis, keepdims=True)
        log_w = self.log_b if axis == 1 else self.log_a
        new = -e * (xp.squeeze(top, axis=axis) + xp.log(xp.squeeze(total, axis=axis)) + log_w)
        kernel = big / (total * math.exp(log_w))
        # subnormal entries (tiny * tau**2 <= eps of the row's mass, as underflowed ones)
        # set to 0: they would cost the matrix-vector products ~100x on a CPU
        return new, xp.where(kernel >= self.tiny, kernel, xp.zeros_like(kernel))

    def _log_iteration(self) -> None:
        """The iteration just tried, redone in the log domain from the last good state."""
        self._absorb()
        self.f, _ = self._absorbed(self.g, axis=1)
        self.g, self.K = self._absorbed(self.f, axis=0)

    def _absorb(self) -> None:
        """Fold the scalings into the potentials; the kernel is formed at the next f update."""
        xp = self.xp
        self.f = self.f + self.e * xp.log(self.u)
        self.g = self.g + self.e * xp.log(self.v)
        self.u, self.v = xp.ones_like(self.u), xp.ones_like(self.v)
        self.K, self.kv = None, None

    def run(self, e: float, steps: int, with_error: bool = False) -> Array | None:
        """``steps`` iterations at regularisation ``e``; the row error after the last."""
        xp = self.xp
        if e != self.e:  # a new regularisation: the effective potentials carry over
            if not math.isnan(self.e):
                self._absorb()
            self.e, self.K, self.kv = e, None, None
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            # a kernel column (row) that underflows gives v = inf (u = inf): NumPy would
            # warn of what the check in _steps catches, and the iteration is redone
            self._steps(e, steps)
        if not with_error:
            return None
        if self.K is None:  # absorbed: the error of the potentials, in the log domain
            return _row_error(xp, self.f / e, self.g / e, self.cost / e, self.log_a, self.log_b)
        self.kv = self.K @ self.v
        rows = (self.a * self.b) * self.u * self.kv
        return xp.sum(xp.abs(rows - self.a))

    def _steps(self, e: float, steps: int) -> None:
        xp = self.xp
        for _ in range(steps):
            if self.K is None:  # the f update by log-sum-exp, forming the kernel (u = 1)
                self.f, self.K = self._absorbed(self.g, axis=1)
                u = self.u
            else:
                kv = self.kv if self.kv is not None else self.K @ self.v
                u = 1.0 / (self.b * kv)
            v = 1.0 / (self.a * (u @ self.K))
            self.kv = None
            reach = _read(xp.max(xp.abs(xp.log(xp.concat([u, v])))))
            if not reach <= self.bound:  # beyond tau, or not finite: redo in the log domain
                self._log_iteration()
                continue
            self.u, self.v = u, v
            if reach > 0.5 * self.bound:
                self._absorb()

    def plan(self) -> Array:
        xp, e = self.xp, self.e
        if self.K is None:
            return _log_plan(xp, self.f / e, self.g / e, self.cost / e, self.log_a, self.log_b)
        return (self.a * self.b) * (self.u[:, None] * self.K * self.v[None, :])


def _read(error: Array) -> float:
    try:
        return float(error)
    except Exception as exc:  # a tracer (jax.jit) or a lazy value cannot be read
        raise TypeError(
            f"sinkhorn: `tol` needs the marginal error on the host, but it cannot be read "
            f"here ({type(exc).__name__}); under jax.jit use flowspec.backends.jax.sinkhorn "
            f"(a while loop to `tol`), or pass tol=None (jax.jit, torch.compile) and check "
            f"the returned `error`"
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

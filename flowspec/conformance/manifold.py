r"""The conformance kit for Riemannian Flow Matching: manifolds, geodesic paths, solvers.

A *manifold adapter* presents an implementation under test with a ``name``, the
``manifold`` it claims (a :class:`flowspec.riemannian.Manifold` instance, e.g.
``Sphere(2)``), the ``kappa`` schedule its geodesic path claims (a flowspec
:class:`~flowspec.schedules.Schedule` whose :math:`\sigma_t` is :math:`\kappa_t`), and
any subset of these methods (NumPy arrays in, any DLPack-readable array out):

===================================  =====================================================
method                               returns
===================================  =====================================================
``dist(x, y)``                       geodesic distance, (B,)
``expmap(x, u)``, ``logmap(x, y)``   points / tangent vectors, x's shape
``projx(x)``, ``proju(x, u)``        projections, x's shape
``sample(x0, x1, t)``                :math:`\exp_{x_1}(\kappa_t \log_{x_1} x_0)`
``target(x0, x1, t)``                its time derivative
``path_time(x0, x1, t)``             the time the library records with a sample
``solve(field, x0, t0, t1, steps,    the state at t1 after ``steps`` equal steps;
method)``                            ``field(t, x)`` takes NumPy (t of shape (B,))
===================================  =====================================================

``t`` is always a NumPy array of shape (B,). The properties are checked on seeded
random inputs plus the hard ones (nearly equal and nearly antipodal points, in float32
and float64; t = 0 and t = 1; a time grid that does not start at 0); see
:data:`PROPERTIES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..riemannian import FlatTorus, GeodesicPath, Manifold, Sphere, solve
from ..schedules import Schedule
from .libraries import to_numpy
from .report import Report, Result

__all__ = [
    "MANIFOLD_CAPABILITIES",
    "PROPERTIES",
    "ManifoldReference",
    "check_manifold",
    "is_manifold_adapter",
    "load_manifold_target",
]

#: Every optional method of the manifold protocol.
MANIFOLD_CAPABILITIES = (
    "dist",
    "expmap",
    "logmap",
    "projx",
    "proju",
    "sample",
    "target",
    "path_time",
    "solve",
)

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def is_manifold_adapter(obj: Any) -> bool:
    """Whether ``obj`` presents a manifold (a ``manifold`` attribute that is a flowspec Manifold)."""
    return isinstance(getattr(obj, "manifold", None), Manifold)


def validate_manifold_adapter(adapter: Any) -> None:
    """Raise TypeError unless ``adapter`` has a name, a flowspec manifold and a kappa schedule."""
    if not isinstance(getattr(adapter, "name", None), str):
        raise TypeError(f"`adapter` must have a string `name`, got {adapter!r}")
    if not is_manifold_adapter(adapter):
        raise TypeError(
            f"`adapter.manifold` must be a flowspec.riemannian manifold (e.g. Sphere(2)), got "
            f"{getattr(adapter, 'manifold', None)!r}"
        )
    if not isinstance(getattr(adapter, "kappa", None), Schedule):
        raise TypeError(
            f"`adapter.kappa` must be a flowspec Schedule whose sigma_t is kappa_t, got "
            f"{getattr(adapter, 'kappa', None)!r}"
        )


class ManifoldReference:
    """flowspec.riemannian itself (NumPy) as a manifold adapter: must pass every property."""

    def __init__(self, manifold: Manifold, kappa: Schedule) -> None:
        self.manifold = manifold
        self.kappa = kappa
        self.path = GeodesicPath(manifold, kappa)
        self.name = f"reference {manifold!r} kappa={kappa!r}"

    def dist(self, x: np.ndarray, y: np.ndarray) -> Any:
        return self.manifold.dist(x, y)

    def expmap(self, x: np.ndarray, u: np.ndarray) -> Any:
        return self.manifold.expmap(x, u)

    def logmap(self, x: np.ndarray, y: np.ndarray) -> Any:
        return self.manifold.logmap(x, y)

    def projx(self, x: np.ndarray) -> Any:
        return self.manifold.projx(x)

    def proju(self, x: np.ndarray, u: np.ndarray) -> Any:
        return self.manifold.proju(x, u)

    def sample(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.sample(x0, x1, t)

    def target(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.target(x0, x1, t)

    def path_time(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return np.asarray(t, copy=True)

    def solve(
        self,
        field: Callable[..., Any],
        x0: np.ndarray,
        t0: float,
        t1: float,
        steps: int,
        method: str,
    ) -> Any:
        return solve(self.manifold, field, x0, steps=steps, t0=t0, t1=t1, method=method)  # type: ignore[arg-type]


# -- inputs -----------------------------------------------------------------------------


def _draws(m: Manifold, rng: np.random.Generator, batch: int) -> np.ndarray:
    assert m.source_draws is not None
    kind, shape = m.source_draws
    size = (batch, *shape)
    return rng.standard_normal(size) if kind == "normal" else rng.random(size)


def _points(m: Manifold, rng: np.random.Generator, batch: int) -> np.ndarray:
    return np.asarray(m.source_sample(_draws(m, rng, batch)))


def _near(m: Manifold, x: np.ndarray, rng: np.random.Generator, scales: np.ndarray) -> np.ndarray:
    """Points at distance ~scales from x along random directions."""
    u = np.asarray(m.proju(x, rng.standard_normal(x.shape)))
    n = np.asarray(m.norm(x, u)).reshape((-1,) + (1,) * (x.ndim - 1))
    return np.asarray(m.expmap(x, u / n * scales.reshape(n.shape)))


def _pairs(
    m: Manifold, rng: np.random.Generator, batch: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random pairs, nearly equal pairs and (on the sphere) nearly antipodal pairs."""
    x = _points(m, rng, batch)
    out = {"random": (x, _points(m, rng, batch))}
    out["nearly equal"] = (x, _near(m, x, rng, 10.0 ** rng.uniform(-7, -3, batch)))
    if isinstance(m, Sphere):
        out["nearly antipodal"] = (x, _near(m, -x, rng, 10.0 ** rng.uniform(-7, -3, batch)))
    return out


# -- comparing ------------------------------------------------------------------------


class _Tally:
    def __init__(self, prop: str) -> None:
        self.prop = prop
        self.n = 0
        self.worst_abs = 0.0
        self.worst_ratio = 0.0
        self.failure: dict[str, Any] | None = None
        self.message = ""

    def compare(
        self, label: str, got: Any, ref: np.ndarray, tol: float, inputs: dict[str, Any]
    ) -> None:
        self.n += 1
        got = np.asarray(to_numpy(got), dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            self._fail(label, f"shape {got.shape}, expected {ref.shape}", inputs, math.inf)
            return
        bad = ~np.isfinite(got) & np.isfinite(ref)
        if np.any(bad):
            i = int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)) if bad.ndim else 0)
            self._fail(
                label,
                f"{int(bad.reshape(bad.shape[0], -1).any(axis=1).sum()) if bad.ndim else 1} of "
                f"{got.shape[0] if got.ndim else 1} results are not finite where the "
                f"specification is (first at row {i})",
                {
                    k: v[i : i + 1] if isinstance(v, np.ndarray) and v.ndim else v
                    for k, v in inputs.items()
                },
                math.inf,
            )
            return
        err = np.abs(got - ref)
        worst = float(np.max(err)) if err.size else 0.0
        self.worst_abs = max(self.worst_abs, worst)
        ratio = worst / tol if tol > 0 else (0.0 if worst == 0 else math.inf)
        self.worst_ratio = max(self.worst_ratio, ratio)
        if ratio > 1.0 and self.failure is None:
            flat = err.reshape(err.shape[0], -1).max(axis=1) if err.ndim else err
            i = int(np.argmax(flat))
            self._fail(
                label,
                f"error {worst:.3g} > tolerance {tol:.3g}",
                {
                    k: v[i : i + 1] if isinstance(v, np.ndarray) and v.ndim else v
                    for k, v in inputs.items()
                },
                ratio,
            )

    def _fail(self, label: str, what: str, inputs: dict[str, Any], ratio: float) -> None:
        self.worst_ratio = max(self.worst_ratio, ratio)
        if self.failure is None:
            self.message = f"{label}: {what}"
            self.failure = {
                "inputs": {
                    k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in inputs.items()
                },
                "error": self.message,
            }

    def result(self) -> Result:
        status = "fail" if self.failure is not None else "pass"
        return Result(
            self.prop,
            status,  # type: ignore[arg-type]
            self.n,
            self.worst_abs,
            math.nan,
            self.worst_ratio,
            counterexample=self.failure,
            message=self.message,
        )


# -- the properties -------------------------------------------------------------------


def _prop_maps(
    adapter: Any, ref: ManifoldReference, rng: np.random.Generator, batch: int
) -> list[Result]:
    m = ref.manifold
    out: list[Result] = []
    if callable(getattr(adapter, "dist", None)):
        tally = _Tally("accuracy.dist")
        for dtype, eps in ((np.float64, EPS64), (np.float32, EPS32)):
            for label, (x, y) in _pairs(m, rng, batch).items():
                xd, yd = x.astype(dtype), y.astype(dtype)
                # the reference on the rounded inputs, in float64: the angle between them
                r = np.asarray(m.dist(xd.astype(np.float64), yd.astype(np.float64)))
                # a few ulps of the result's scale; the embedding's entries (cosh r on the
                # hyperboloid) enter squared through the Minkowski products
                size = 1.0 + float(np.max(np.sum(np.abs(x.reshape(batch, -1)) ** 2, axis=1)))
                tally.compare(
                    f"{label} {np.dtype(dtype).name}",
                    adapter.dist(xd, yd),
                    r,
                    64 * eps * size * (1.0 + float(np.max(np.abs(r)))),
                    {"x": xd, "y": yd},
                )
        out.append(tally.result())
    for name in ("expmap", "logmap", "projx", "proju"):
        if not callable(getattr(adapter, name, None)):
            continue
        tally = _Tally(f"agreement.{name}")
        for label, (x, y) in _pairs(m, rng, batch).items():
            if label == "nearly antipodal" and name == "logmap":
                continue  # ill-conditioned direction near the cut locus: not a defect
            u = (
                np.asarray(m.logmap(x, y))
                if label != "nearly antipodal"
                else np.asarray(m.proju(x, y - x))
            )
            args = {"expmap": (x, u), "logmap": (x, y), "projx": (x,), "proju": (x, y - x)}[name]
            want = np.asarray(getattr(ref, name)(*args))
            tol = 256 * EPS64 * (1.0 + float(np.max(np.abs(want))))
            got = getattr(adapter, name)(*args)
            if isinstance(m, FlatTorus) and name in ("expmap", "projx"):
                # the same angle may come back as 2 pi instead of 0: compare on the circle
                got = np.asarray(m.logmap(want, np.remainder(to_numpy(got), 2 * math.pi))) + want
            tally.compare(label, got, want, tol, dict(zip(("x", "u"), args, strict=False)))
        out.append(tally.result())
    return out


def _prop_path(
    adapter: Any, ref: ManifoldReference, rng: np.random.Generator, batch: int
) -> list[Result]:
    m = ref.manifold
    out: list[Result] = []
    x1 = _points(m, rng, batch)
    x0 = (
        _near(m, x1, rng, rng.uniform(0.1, 2.5, batch))
        if isinstance(m, Sphere)
        else _points(m, rng, batch)
    )
    times = {
        "t = 0": np.zeros(batch),
        "t = 1": np.ones(batch),
        "random t": rng.uniform(0.0, 1.0, batch),
    }
    for name in ("sample", "target"):
        if not callable(getattr(adapter, name, None)):
            continue
        tally = _Tally(f"agreement.{name}")
        for label, t in times.items():
            want = np.asarray(getattr(ref, name)(x0, x1, t))
            got = getattr(adapter, name)(x0, x1, t)
            if isinstance(m, FlatTorus) and name == "sample":
                got = np.asarray(m.logmap(want, np.remainder(to_numpy(got), 2 * math.pi))) + want
            tol = 1e3 * EPS64 * (1.0 + float(np.max(np.abs(want))))
            tally.compare(label, got, want, tol, {"x0": x0, "x1": x1, "t": t})
        out.append(tally.result())
    if callable(getattr(adapter, "path_time", None)):
        tally = _Tally("convention.t_shape")
        t = times["random t"]
        got = np.asarray(to_numpy(adapter.path_time(x0, x1, t)))
        tally.compare("the recorded t", got, t, 0.0, {"t": t})
        out.append(tally.result())
    return out


def _prop_solver(
    adapter: Any, ref: ManifoldReference, rng: np.random.Generator, batch: int
) -> list[Result]:
    if not callable(getattr(adapter, "solve", None)):
        return []
    m = ref.manifold
    out = []
    x0 = _points(m, rng, batch)
    # the times at which an Euler step evaluates the field: t_k = t0 + k h from t0
    tally = _Tally("solver.times")
    for t0, t1, steps in ((0.0, 1.0, 4), (0.5, 1.0, 2), (0.2, 0.9, 7)):
        seen: list[float] = []

        def zero(t: Any, x: Any, seen: list[float] = seen) -> Any:
            seen.append(float(np.asarray(to_numpy(t)).reshape(-1)[0]))
            return np.zeros_like(np.asarray(to_numpy(x)))

        adapter.solve(zero, x0, t0, t1, steps, "euler")
        want = np.array([t0 + k * (t1 - t0) / steps for k in range(steps)])
        got = np.array(seen)
        if got.shape != want.shape:
            got = np.full(want.shape, np.nan) if got.size != want.size else got
            got = np.where(np.isfinite(got), got, math.inf)
        tally.compare(
            f"grid [{t0}, {t1}], {steps} steps",
            got,
            want,
            8 * EPS64,
            {"t0": t0, "t1": t1, "steps": steps},
        )
    out.append(tally.result())
    # the conditional field generates the path (rk4, 32 steps from 0 to 0.6)
    tally = _Tally("solver.conditional_flow")
    x1 = _points(m, rng, batch)
    xs = (
        _near(m, x1, rng, rng.uniform(0.1, 2.5, batch))
        if isinstance(m, Sphere)
        else _points(m, rng, batch)
    )
    path = ref.path
    for method in ("euler", "midpoint", "rk4"):

        def field(t: Any, x: Any) -> Any:
            return path.velocity(np.asarray(to_numpy(x)), x1, np.asarray(to_numpy(t)))

        got = adapter.solve(field, xs, 0.0, 0.6, 32, method)
        want = np.asarray(path.sample(xs, x1, 0.6))
        # the method's global error C h^order with C <= 5 at h = 0.6/32, plus round-off
        order = {"euler": 1, "midpoint": 2, "rk4": 4}[method]
        tol = 5 * (0.6 / 32) ** order + 1e3 * EPS64
        d = np.asarray(m.dist(m.projx(np.asarray(to_numpy(got), dtype=np.float64)), want))
        tally.compare(method, d, np.zeros_like(d), tol, {"x0": xs, "x1": x1})
    out.append(tally.result())
    return out


#: The property groups, in the order they run.
PROPERTIES = (_prop_maps, _prop_path, _prop_solver)


def check_manifold(adapter: Any, *, seed: int = 0, batch: int = 64, target: str = "") -> Report:
    """Check a manifold adapter against ``flowspec.riemannian``; a :class:`Report`.

    Examples
    --------
    >>> from flowspec import CondOT
    >>> from flowspec.riemannian import Sphere
    >>> from flowspec.conformance.manifold import ManifoldReference, check_manifold
    >>> check_manifold(ManifoldReference(Sphere(2), CondOT()), batch=8).passed
    True
    """
    validate_manifold_adapter(adapter)
    ref = ManifoldReference(adapter.manifold, adapter.kappa)
    have = [c for c in MANIFOLD_CAPABILITIES if callable(getattr(adapter, c, None))]
    report = Report(
        target=target or adapter.name,
        adapter=adapter.name,
        schedule=f"{adapter.manifold!r} kappa={adapter.kappa!r}",
        capabilities=have,
        missing=[c for c in MANIFOLD_CAPABILITIES if c not in have],
        seed=seed,
        max_examples=batch,
    )
    rng = np.random.default_rng(seed)
    for group in PROPERTIES:
        try:
            report.results.extend(group(adapter, ref, rng, batch))
        except Exception as exc:  # the adapter raised: reported, never a crash of the kit
            report.results.append(
                Result(
                    group.__name__.removeprefix("_prop_"),
                    "error",
                    message=f"{type(exc).__name__}: {exc}",
                )
            )
    return report


def load_manifold_target(target: str) -> list[Any]:
    """The manifold adapters a shipped peer provides (``manifold_adapters()``), or none."""
    import importlib

    from .adapter import PEERS

    if target not in PEERS:
        return []
    module = importlib.import_module(f"flowspec.conformance.peers.{PEERS[target]}")
    make = getattr(module, "manifold_adapters", None)
    return list(make()) if callable(make) else []

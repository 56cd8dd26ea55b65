"""Adapters for Meta's ``flow_matching`` library (facebookresearch/flow_matching).

``AffineProbPath`` with each of its five schedulers, mapped to the contract schedule
it implements:

==============================  ==========================================
flow_matching scheduler         flowspec schedule
==============================  ==========================================
``CondOTScheduler()``           ``CondOT(sigma_min=0.0)``
``PolynomialConvexScheduler(n)``  ``Polynomial(n)`` (n = 2 and n = 0.5)
``VPScheduler()``               ``VariancePreserving(0.1, 20.0)``
``LinearVPScheduler()``         ``LinearVP()``
``CosineScheduler()``           ``Cosine()``
==============================  ==========================================

Capabilities: ``coefficients`` (the scheduler), ``sample`` and ``target``
(``path.sample(...).x_t`` and ``.dx_t``), ``velocity`` (``target_to_velocity``: the
conditional x1-prediction is x1 itself), the six conversion helpers, ``snr_inverse``
(the scheduler's), and ``euler`` (``ODESolver(...).sample(method="euler",
step_size=1/steps)`` on a float grid of the state's dtype). flow_matching has no
conditional log-density and no continuous loss function, so ``log_prob`` and ``loss``
are reported missing.

``ScheduleTransformedModel(model, original_scheduler, new_scheduler)`` is checked as
``change_schedule`` (:class:`FlowMatchingScheduleChange`), for four pairs of
schedulers whose SNR ranges nest, CondOT -> Cosine among them.

Discrete paths (:mod:`flowspec.conformance.discrete`): ``MixtureDiscreteProbPath``
with ``MixturePathGeneralizedKL`` and ``MixtureDiscreteEulerSolver``, for its convex
schedulers (``CondOTScheduler`` is kappa_t = t, ``PolynomialConvexScheduler(n)`` is
kappa_t = t^n; its ``CosineScheduler`` is not convex and the mixture path refuses it),
with a uniform source and with a mask source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ... import schedules as fs_schedules
from ._torch import column, tensor, torch, wrap_field

__all__ = [
    "FlowMatchingDiscrete",
    "FlowMatchingPath",
    "FlowMatchingScheduleChange",
    "adapters",
    "discrete_adapters",
]


class FlowMatchingPath:
    """``flow_matching.path.AffineProbPath(scheduler)`` as a conformance adapter."""

    def __init__(self, scheduler: Any, schedule: fs_schedules.Schedule, label: str) -> None:
        from flow_matching.path import AffineProbPath

        self.scheduler = scheduler
        self.path = AffineProbPath(scheduler=scheduler)
        self.schedule = schedule
        self.name = f"flow_matching.AffineProbPath({label})"

    def coefficients(self, t: np.ndarray) -> tuple[Any, ...]:
        out = self.scheduler(tensor(t))
        return out.alpha_t, out.sigma_t, out.d_alpha_t, out.d_sigma_t

    def sample(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.sample(x_0=tensor(x0), x_1=tensor(x1), t=tensor(t)).x_t

    def target(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.sample(x_0=tensor(x0), x_1=tensor(x1), t=tensor(t)).dx_t

    # The conversion helpers do not reshape t: it must broadcast against x_t, so the
    # adapter passes (B, 1, ..., 1). A (B,) t would broadcast along the last event axis.
    def velocity(self, x: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.target_to_velocity(x_1=tensor(x1), x_t=tensor(x), t=column(t, x))

    def velocity_from_x1(self, x1: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self.path.target_to_velocity(x_1=tensor(x1), x_t=tensor(x), t=column(t, x))

    def velocity_from_x0(self, x0: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self.path.epsilon_to_velocity(epsilon=tensor(x0), x_t=tensor(x), t=column(t, x))

    def x1_from_velocity(self, v: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self.path.velocity_to_target(velocity=tensor(v), x_t=tensor(x), t=column(t, x))

    def x0_from_velocity(self, v: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self.path.velocity_to_epsilon(velocity=tensor(v), x_t=tensor(x), t=column(t, x))

    def x1_from_x0(self, x0: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self.path.epsilon_to_target(epsilon=tensor(x0), x_t=tensor(x), t=column(t, x))

    def x0_from_x1(self, x1: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self.path.target_to_epsilon(x_1=tensor(x1), x_t=tensor(x), t=column(t, x))

    def snr_inverse(self, snr: np.ndarray) -> Any:
        return self.scheduler.snr_inverse(tensor(snr))

    def euler(self, field: Callable[[Any, Any], Any], x0: np.ndarray, steps: int) -> Any:
        from flow_matching.solver import ODESolver

        f = wrap_field(field, x0.shape[0])
        solver = ODESolver(velocity_model=lambda x, t: f(t, x))
        grid = torch().tensor([0.0, 1.0], dtype=tensor(x0).dtype)
        return solver.sample(
            x_init=tensor(x0), step_size=1.0 / steps, method="euler", time_grid=grid
        )


class FlowMatchingScheduleChange:
    """``flow_matching.path.scheduler.ScheduleTransformedModel`` as a conformance adapter.

    ``schedule`` is the new scheduler's contract schedule, ``source_schedule`` the
    original one's. r is passed as a (B, 1, ..., 1) column (the model does not reshape
    a (B,) time: it would broadcast against the last axis of x).
    """

    def __init__(
        self,
        original: Any,
        new: Any,
        source: fs_schedules.Schedule,
        schedule: fs_schedules.Schedule,
        label: str,
    ) -> None:
        self.original, self.new = original, new
        self.source_schedule, self.schedule = source, schedule
        self.name = f"flow_matching.ScheduleTransformedModel({label})"

    def change_schedule(
        self, field: Callable[[Any, Any], Any], x: np.ndarray, r: np.ndarray
    ) -> Any:
        from flow_matching.path.scheduler import ScheduleTransformedModel
        from flow_matching.utils import ModelWrapper

        torch_field = wrap_field(field, x.shape[0])

        class Model(ModelWrapper):
            def forward(self, x: Any, t: Any, **extras: Any) -> Any:
                return torch_field(t.reshape(-1), x)

        model = ScheduleTransformedModel(Model(None), self.original, self.new)
        return model(x=tensor(x), t=column(r, x))


def adapters() -> list[Any]:
    """One adapter per scheduler of flow_matching (Polynomial with n = 2 and n = 0.5),
    and four schedule changes."""
    from flow_matching.path.scheduler import (
        CondOTScheduler,
        CosineScheduler,
        LinearVPScheduler,
        PolynomialConvexScheduler,
        VPScheduler,
    )

    return [
        FlowMatchingPath(CondOTScheduler(), fs_schedules.CondOT(0.0), "CondOTScheduler()"),
        FlowMatchingPath(
            PolynomialConvexScheduler(2),
            fs_schedules.Polynomial(2.0),
            "PolynomialConvexScheduler(2)",
        ),
        FlowMatchingPath(
            PolynomialConvexScheduler(0.5),
            fs_schedules.Polynomial(0.5),
            "PolynomialConvexScheduler(0.5)",
        ),
        FlowMatchingPath(
            VPScheduler(beta_min=0.1, beta_max=20.0),
            fs_schedules.VariancePreserving(0.1, 20.0),
            "VPScheduler()",
        ),
        FlowMatchingPath(LinearVPScheduler(), fs_schedules.LinearVP(), "LinearVPScheduler()"),
        FlowMatchingPath(CosineScheduler(), fs_schedules.Cosine(), "CosineScheduler()"),
        *(
            FlowMatchingScheduleChange(a, b, fa, fb, f"{la} -> {lb}")
            for (a, fa, la), (b, fb, lb) in [
                ((CondOTScheduler(), fs_schedules.CondOT(0.0), "CondOTScheduler()"),
                 (CosineScheduler(), fs_schedules.Cosine(), "CosineScheduler()")),
                ((CosineScheduler(), fs_schedules.Cosine(), "CosineScheduler()"),
                 (CondOTScheduler(), fs_schedules.CondOT(0.0), "CondOTScheduler()")),
                ((CondOTScheduler(), fs_schedules.CondOT(0.0), "CondOTScheduler()"),
                 (VPScheduler(beta_min=0.1, beta_max=20.0), fs_schedules.VariancePreserving(0.1, 20.0), "VPScheduler()")),
                ((PolynomialConvexScheduler(2), fs_schedules.Polynomial(2.0), "PolynomialConvexScheduler(2)"),
                 (LinearVPScheduler(), fs_schedules.LinearVP(), "LinearVPScheduler()")),
            ]
        ),
        *discrete_adapters(),
    ]  # fmt: skip


# -- discrete paths -------------------------------------------------------------------------


class FlowMatchingDiscrete:
    """``MixtureDiscreteProbPath``, ``MixturePathGeneralizedKL`` and
    ``MixtureDiscreteEulerSolver`` of one convex scheduler as a discrete adapter.

    ``posterior_to_rate`` passes ``log(probs)`` as the posterior logits (softmax of
    them is ``probs``); ``loss`` sums the per-token loss (``reduction="none"``) over the
    tokens; ``euler`` wraps the kit's posterior in a ``ModelWrapper`` returning
    probabilities (the solver samples from the model output with ``torch.multinomial``)
    and calls ``sample(step_size=1/steps)`` on a float64 time grid [0, 1].
    """

    def __init__(
        self,
        scheduler: Any,
        schedule: Any,
        label: str,
        vocab_size: int,
        mask_token: int | None = None,
    ) -> None:
        from flow_matching.loss import MixturePathGeneralizedKL
        from flow_matching.path import MixtureDiscreteProbPath

        self.scheduler = scheduler
        self.path = MixtureDiscreteProbPath(scheduler)
        self.kl = MixturePathGeneralizedKL(self.path, reduction="none")
        self.schedule = schedule
        self.vocab_size = vocab_size
        self.mask_token = mask_token
        source = "uniform" if mask_token is None else f"mask {mask_token}"
        self.name = f"flow_matching.MixtureDiscreteProbPath({label}), V={vocab_size}, {source}"

    def coefficients(self, t: np.ndarray) -> tuple[Any, Any]:
        out = self.scheduler(tensor(t))
        return out.alpha_t, out.d_alpha_t

    def sample(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.sample(x_0=tensor(x0), x_1=tensor(x1), t=tensor(t)).x_t

    def posterior_to_rate(self, probs: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        with np.errstate(divide="ignore"):
            logits = np.log(probs)
        return self.path.posterior_to_velocity(
            posterior_logits=tensor(logits), x_t=tensor(x), t=tensor(t)
        )

    def loss(self, logits: np.ndarray, x1: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        per_token = self.kl(tensor(logits), tensor(x1), tensor(x), tensor(t))
        return per_token.sum(dim=-1)

    def euler(self, posterior: Callable[[Any, Any], Any], x0: np.ndarray, steps: int) -> Any:
        from flow_matching.solver import MixtureDiscreteEulerSolver
        from flow_matching.utils import ModelWrapper

        th = torch()

        class Model(ModelWrapper):
            def __init__(self) -> None:
                super().__init__(None)

            def forward(self, x: Any, t: Any, **extras: Any) -> Any:
                probs = posterior(t.detach().cpu().numpy(), x.detach().cpu().numpy())
                return th.from_numpy(np.asarray(probs))

        solver = MixtureDiscreteEulerSolver(Model(), self.path, self.vocab_size)
        grid = th.tensor([0.0, 1.0], dtype=th.float64)
        return solver.sample(
            x_init=tensor(x0),
            step_size=1.0 / steps,
            time_grid=grid,
            dtype_categorical=th.float64,
        )


def discrete_adapters() -> list[FlowMatchingDiscrete]:
    """The discrete adapters: kappa = t and t^2, uniform and mask sources."""
    from flow_matching.path.scheduler import CondOTScheduler, PolynomialConvexScheduler

    from ... import discrete as fd

    return [
        FlowMatchingDiscrete(CondOTScheduler(), fd.Linear(), "CondOTScheduler()", 3),
        FlowMatchingDiscrete(
            PolynomialConvexScheduler(2), fd.Polynomial(2.0), "PolynomialConvexScheduler(2)", 4, 3
        ),
    ]


# -- Riemannian: GeodesicProbPath on each manifold, RiemannianODESolver -------------------
class FlowMatchingGeodesic:
    """``GeodesicProbPath(scheduler, manifold)`` and ``RiemannianODESolver`` as a manifold adapter.

    ``manifold`` is flowspec's twin of flow_matching's (``Euclidean``, ``Sphere``,
    ``FlatTorus``, same coordinates); ``kappa`` is the flowspec schedule whose sigma_t
    equals flow_matching's geodesic parameter: its code computes
    exp_{x0}(alpha_t log_{x0} x1) = exp_{x1}((1 - alpha_t) log_{x1} x0), so kappa_t =
    1 - alpha_t, which is sigma_t of CondOT and of Polynomial(n). Capabilities: the
    manifold's maps it has (``dist`` on the sphere only), ``sample``, ``target``,
    ``path_time`` (``PathSample.t``) and ``solve`` (``step_size=(t1 - t0)/steps`` on
    ``time_grid=[t0, t1]``).
    """

    def __init__(
        self, fm_manifold: Any, manifold: Any, scheduler: Any, kappa: Any, label: str
    ) -> None:
        from flow_matching.path import GeodesicProbPath

        self.fm = fm_manifold
        self.manifold = manifold
        self.kappa = kappa
        self.path = GeodesicProbPath(scheduler=scheduler, manifold=fm_manifold)
        self.name = f"flow_matching.GeodesicProbPath({label})"
        if hasattr(fm_manifold, "dist"):
            self.dist = lambda x, y: self.fm.dist(tensor(x), tensor(y))

    def expmap(self, x: np.ndarray, u: np.ndarray) -> Any:
        return self.fm.expmap(tensor(x), tensor(u))

    def logmap(self, x: np.ndarray, y: np.ndarray) -> Any:
        return self.fm.logmap(tensor(x), tensor(y))

    def projx(self, x: np.ndarray) -> Any:
        return self.fm.projx(tensor(x))

    def proju(self, x: np.ndarray, u: np.ndarray) -> Any:
        return self.fm.proju(tensor(x), tensor(u))

    def sample(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.sample(x_0=tensor(x0), x_1=tensor(x1), t=tensor(t)).x_t

    def target(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.sample(x_0=tensor(x0), x_1=tensor(x1), t=tensor(t)).dx_t

    def path_time(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.sample(x_0=tensor(x0), x_1=tensor(x1), t=tensor(t)).t

    def solve(
        self,
        field: Callable[[Any, Any], Any],
        x0: np.ndarray,
        t0: float,
        t1: float,
        steps: int,
        method: str,
    ) -> Any:
        from flow_matching.solver import RiemannianODESolver

        th = torch()
        f = wrap_field(field, x0.shape[0])

        class _Model(th.nn.Module):
            def forward(self, x: Any, t: Any) -> Any:
                tb = th.full((x.shape[0],), float(t), dtype=x.dtype)
                return f(tb, x)

        solver = RiemannianODESolver(manifold=self.fm, velocity_model=_Model())
        grid = th.tensor([t0, t1], dtype=th.float64)
        return solver.sample(
            x_init=tensor(x0), step_size=(t1 - t0) / steps, method=method, time_grid=grid
        )


def manifold_adapters() -> list[FlowMatchingGeodesic]:
    """One adapter per (manifold, scheduler): Euclidean, Sphere, FlatTorus x CondOT, Polynomial(2)."""
    from flow_matching.path.scheduler import CondOTScheduler, PolynomialConvexScheduler
    from flow_matching.utils import manifolds as fm

    from ...riemannian import Euclidean, FlatTorus, Sphere

    out = []
    for fm_m, m in (
        (fm.Euclidean(), Euclidean(3)),
        (fm.Sphere(), Sphere(2)),
        (fm.FlatTorus(), FlatTorus(2)),
    ):
        for sched, kappa, label in (
            (CondOTScheduler(), fs_schedules.CondOT(0.0), "CondOTScheduler()"),
            (
                PolynomialConvexScheduler(2),
                fs_schedules.Polynomial(2.0),
                "PolynomialConvexScheduler(2)",
            ),
        ):
            out.append(
                FlowMatchingGeodesic(fm_m, m, sched, kappa, f"{label}, {type(fm_m).__name__}()")
            )
    return out

"""The Riemannian conformance kit: the reference passes; flow_matching's findings are pinned.

The expected deviations are the ones recorded in docs/theory/riemannian.md; if a new
release of flow_matching changes one, this test says so.
"""

from __future__ import annotations

import pytest

import flowspec as fs
from flowspec.conformance.manifold import (
    ManifoldReference,
    check_manifold,
    load_manifold_target,
    validate_manifold_adapter,
)
from flowspec.riemannian import SO3, Euclidean, FlatTorus, Hyperbolic, Sphere


@pytest.mark.parametrize(
    "m", [Euclidean(3), Sphere(2), FlatTorus(2), Hyperbolic(2), SO3()], ids=repr
)
def test_reference_passes_every_property(m):
    rep = check_manifold(ManifoldReference(m, fs.Polynomial(2.0)), batch=8)
    assert rep.passed, [(r.prop, r.message) for r in rep.results if r.status != "pass"]
    assert rep.missing == []


def test_adapter_validation_names_the_attribute():
    class Bad:
        name = "bad"
        manifold = "sphere"
        kappa = fs.CondOT()

    with pytest.raises(TypeError, match=r"`adapter\.manifold`"):
        validate_manifold_adapter(Bad())
    Bad.manifold = Sphere(2)
    Bad.kappa = None
    with pytest.raises(TypeError, match=r"`adapter\.kappa`"):
        validate_manifold_adapter(Bad())


def test_flow_matching_findings():
    pytest.importorskip("flow_matching")
    adapters = load_manifold_target("flow_matching")
    assert len(adapters) == 6  # Euclidean, Sphere, FlatTorus x CondOT, Polynomial(2)
    for a in adapters:
        rep = check_manifold(a, batch=16)
        failed = {r.prop for r in rep.results if r.status != "pass"}
        # every manifold: PathSample.t is (B, 1), and with a step_size the solver's grid
        # starts at 0 whatever time_grid[0] is
        expected = {"convention.t_shape", "solver.times"}
        if isinstance(a.manifold, Sphere):
            # acos distance: NaN or half the digits for nearly equal points; its logmap
            # inherits the error
            expected |= {"accuracy.dist", "agreement.logmap"}
        assert failed == expected, (a.name, [(r.prop, r.message) for r in rep.results])
        times = next(r for r in rep.results if r.prop == "solver.times")
        assert times.counterexample["inputs"]["t0"] == 0.5, times.counterexample
        shape = next(r for r in rep.results if r.prop == "convention.t_shape")
        assert "(16, 1)" in shape.message
        # the path itself agrees with the geodesic path of kappa = sigma (= 1 - alpha)
        for prop in ("agreement.sample", "agreement.target", "solver.conditional_flow"):
            assert next(r for r in rep.results if r.prop == prop).status == "pass", prop


def test_flow_matching_sphere_dist_is_nan_in_float32():
    pytest.importorskip("flow_matching")
    import numpy as np
    import torch
    from flow_matching.utils.manifolds import Sphere as FMSphere

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 3, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    y = x + 1e-4 * torch.randn(1000, 3, generator=g)
    y = y / y.norm(dim=1, keepdim=True)
    assert int(torch.isnan(FMSphere().dist(x, y)).sum()) > 50  # 125 with this seed
    ours = Sphere(2).dist(x, y)
    assert bool(torch.isfinite(ours).all())
    # ours agrees with the float64 angle of the same float32 inputs to a few ulps
    ref = Sphere(2).dist(x.double(), y.double()).numpy()
    np.testing.assert_allclose(ours.numpy(), ref, rtol=8 * np.finfo(np.float32).eps)

"""The manifolds of flowspec.riemannian: identities on every library, accuracy at hard points.

Error model: every map is a composition of O(1) well-conditioned operations on O(1)
data (points within a few units of the origin for the hyperboloid), so identities hold
to C eps with C a small constant per check, written next to each assertion.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from helpers import to_numpy
from riemannian_cases import IDS, MANIFOLDS, draws, points, tangent

from flowspec.riemannian import SO3, FlatTorus, Hyperbolic, Sphere

EPS64 = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps


def _in(xp, a):
    return xp.asarray(a)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_identities_on_every_library(xp, m):
    rng = np.random.default_rng(0)
    x, y = points(m, rng, 16), points(m, rng, 16)
    if isinstance(m, Sphere):  # keep away from the cut locus (antipode) for the identities
        y = m.expmap(x, tangent(m, x, rng, 0.5))
    u = tangent(m, x, rng, 0.7)
    X, Y, U = _in(xp, x), _in(xp, y), _in(xp, u)
    # outputs keep the namespace and agree with the NumPy run (same formulas)
    for name, out, ref in [
        ("expmap", m.expmap(X, U), m.expmap(x, u)),
        ("logmap", m.logmap(X, Y), m.logmap(x, y)),
        ("dist", m.dist(X, Y), m.dist(x, y)),
        ("projx", m.projx(X), m.projx(x)),
        ("proju", m.proju(X, U), m.proju(x, u)),
        ("norm", m.norm(X, U), m.norm(x, u)),
    ]:
        assert type(out) is type(X), name
        # the same float64 formulas on another library: a few ulps of the intermediates
        np.testing.assert_allclose(
            to_numpy(out), ref, rtol=200 * EPS64, atol=200 * EPS64, err_msg=name
        )
    # exp and log are inverse, dist is the norm of log, log is tangent
    v = m.logmap(x, y)
    np.testing.assert_allclose(m.expmap(x, v), y, atol=100 * EPS64)
    np.testing.assert_allclose(m.norm(x, v), m.dist(x, y), atol=100 * EPS64)
    np.testing.assert_allclose(m.proju(x, v), v, atol=100 * EPS64)
    np.testing.assert_allclose(m.logmap(x, m.expmap(x, u)), u, atol=200 * EPS64)
    # log_x(x) = 0 exactly-ish, projections are idempotent and points stay on the manifold
    np.testing.assert_allclose(m.logmap(x, x), 0.0, atol=10 * EPS64)
    np.testing.assert_allclose(m.projx(m.projx(x)), m.projx(x), atol=10 * EPS64)
    assert np.all(m.constraint_violation(m.expmap(x, u)) <= 100 * EPS64)
    # dist is symmetric
    np.testing.assert_allclose(m.dist(x, y), m.dist(y, x), atol=100 * EPS64)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_geodesic_velocity_and_transport(m):
    rng = np.random.default_rng(1)
    x = points(m, rng, 8)
    u = tangent(m, x, rng, 0.9)
    s = 0.6
    p, v = m.geodesic(x, u, s)
    np.testing.assert_allclose(p, m.expmap(x, s * u), atol=50 * EPS64)
    # central difference of gamma: error h^2 |gamma'''| / 6 + eps / h, h = 1e-5
    h = 1e-5
    fd = (m.expmap(x, (s + h) * u) - m.expmap(x, (s - h) * u)) / (2 * h)
    fd = fd if not isinstance(m, FlatTorus) else u  # the torus wraps; its velocity is u
    np.testing.assert_allclose(v, fd, atol=1e-8)
    # parallel transport back along the geodesic maps gamma'(1) to u and is an isometry
    p1, v1 = m.geodesic(x, u, 1.0)
    np.testing.assert_allclose(m.transport_back(x, u, v1), u, atol=100 * EPS64)
    w = tangent(m, p1, rng)
    back = m.transport_back(x, u, w)
    np.testing.assert_allclose(m.proju(x, back), back, atol=100 * EPS64)
    np.testing.assert_allclose(m.norm(x, back), m.norm(p1, w), atol=100 * EPS64)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_source_on_the_manifold(xp, m):
    rng = np.random.default_rng(2)
    z = _in(xp, draws(m, rng, 32))
    x = m.source_sample(z)
    assert type(x) is type(z)
    assert np.all(to_numpy(m.constraint_violation(x)) <= 50 * EPS64)
    lp = to_numpy(m.source_log_prob(x))
    assert lp.shape == (32,) and np.all(np.isfinite(lp))


def test_source_log_prob_normalises_on_the_circle_and_hyperbolic_plane():
    # S^1: uniform density 1/(2 pi); H^1: the wrapped normal is the normal of the arclength
    s = Sphere(1)
    np.testing.assert_allclose(s.source_log_prob(np.array([[1.0, 0.0]])), -np.log(2 * np.pi))
    h = Hyperbolic(1)
    r = np.linspace(-8, 8, 4001)
    x = np.stack([np.cosh(r), np.sinh(r)], axis=1)
    mass = np.trapezoid(np.exp(h.source_log_prob(x)), r)  # ds = dr on H^1
    assert abs(mass - 1.0) < 1e-9  # trapezoid on a Gaussian: spectrally accurate


# -- accuracy at nearly equal and nearly antipodal points, float32 and float64 ---------


def _sphere_pairs(dtype, kind, n=200, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    delta = 10.0 ** rng.uniform(-7, -2, size=(n, 1)) * rng.standard_normal((n, 3))
    y = (x if kind == "equal" else -x) + delta
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x.astype(dtype), y.astype(dtype)


def _mp_angle(x, y):
    """Independent reference: the angle in 50-digit arithmetic from the rounded inputs."""
    mpmath.mp.dps = 50
    out = []
    for a, b in zip(x, y, strict=True):
        a = [mpmath.mpf(float(v)) for v in a]
        b = [mpmath.mpf(float(v)) for v in b]
        na = mpmath.sqrt(sum(v * v for v in a))
        nb = mpmath.sqrt(sum(v * v for v in b))
        a = [v / na for v in a]
        b = [v / nb for v in b]
        cross = [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
        out.append(
            float(
                mpmath.atan2(
                    mpmath.sqrt(sum(v * v for v in cross)),
                    sum(p * q for p, q in zip(a, b, strict=True)),
                )
            )
        )
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["equal", "antipodal"])
def test_sphere_dist_accuracy(dtype, kind):
    x, y = _sphere_pairs(dtype, kind)
    d = Sphere(2).dist(x, y)
    assert d.dtype == dtype and np.all(np.isfinite(d))
    ref = _mp_angle(x, y)
    eps = np.finfo(dtype).eps
    # inputs are unit to ~eps (rounded normalisation); 2 atan2(|x-y|, |x+y|) adds a few
    # ulps: absolute error <= 16 eps (relative to pi) everywhere, and for nearly equal
    # points also relative error <= 16 eps of the angle itself plus the input rounding
    # the angle between the directions of the rounded inputs: a few ulps, relative for
    # nearly equal points (the short chord carries the angle), absolute (of pi) for
    # nearly antipodal ones
    if kind == "equal":
        np.testing.assert_allclose(d, ref, rtol=8 * eps, atol=0)
    else:
        np.testing.assert_allclose(d, ref, rtol=0, atol=8 * eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_sphere_log_accuracy_near_equal(dtype):
    x, y = _sphere_pairs(dtype, "equal")
    s = Sphere(2)
    v = s.logmap(x, y)
    ref = s.logmap(x.astype(np.float64), y.astype(np.float64))  # float64 of the same inputs
    eps = np.finfo(dtype).eps
    # |log| ~ theta; the direction and length are computed from the short chord y - x
    # without cancellation: relative error a few eps of |log|
    err = np.linalg.norm(v - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert np.all(err <= 16 * eps), err.max()


def test_sphere_log_at_the_cut_locus_is_nan_and_near_it_has_length_pi():
    s = Sphere(2)
    x = np.array([[0.0, 0.0, 1.0]])
    with np.errstate(divide="ignore", invalid="ignore"):  # pi * 0 / 0, documented
        assert np.all(np.isnan(s.logmap(x, -x)))
    y = s.projx(np.array([[1e-9, 0.0, -1.0]]))
    v = s.logmap(x, y)
    np.testing.assert_allclose(np.linalg.norm(v), np.pi - 1e-9, rtol=4 * EPS64)
    np.testing.assert_allclose(s.expmap(x, v), y, atol=4 * EPS64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("angle", [1e-6, 1e-3, 1.0, np.pi - 1e-3, np.pi - 1e-6])
def test_so3_dist_and_log_accuracy(dtype, angle):
    m = SO3()
    rng = np.random.default_rng(4)
    R = points(m, rng, 50)
    axis = rng.standard_normal((50, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    w = angle * axis
    from flowspec.riemannian.manifolds.rotations import _hat

    S = m.expmap(R, R @ _hat(np, w))
    d = m.dist(R.astype(dtype), S.astype(dtype))
    eps = np.finfo(dtype).eps
    # absolute angle error: a few eps from the rounded inputs and the 3x3 products
    np.testing.assert_allclose(d, angle, rtol=0, atol=32 * eps)
    v = m.logmap(R.astype(dtype), S.astype(dtype))
    omega = np.stack([v[:, 2, 1], v[:, 0, 2], v[:, 1, 0]], axis=1)  # vee(R^T V) ~ R^T V for R ~ R
    omega = np.einsum("bji,bjk->bik", R.astype(dtype), v)
    omega = np.stack([omega[:, 2, 1], omega[:, 0, 2], omega[:, 1, 0]], axis=1)
    # near pi the axis is recovered from the symmetric part: error ~ eps / (1 - cos)
    np.testing.assert_allclose(omega, w, rtol=0, atol=64 * eps)


def test_so3_log_at_the_cut_locus_returns_a_shortest_geodesic():
    m = SO3()
    R = np.eye(3)[None]
    S = np.diag([1.0, -1.0, -1.0])[None]  # rotation by pi about x
    v = m.logmap(R, S)
    np.testing.assert_allclose(
        v, np.pi * np.array([[[0, 0, 0], [0, 0, -1], [0, 1, 0]]]), atol=4 * EPS64
    )
    np.testing.assert_allclose(m.expmap(R, v), S, atol=8 * EPS64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_hyperbolic_dist_near_equal_keeps_relative_accuracy(dtype):
    h = Hyperbolic(2)
    rng = np.random.default_rng(5)
    x = points(h, rng, 100)
    for size in (1e-7, 1e-4, 1.0):
        u = tangent(h, x, rng)
        u *= size / h.norm(x, u)[:, None]
        y = h.expmap(x, u)
        d = h.dist(x.astype(dtype), y.astype(dtype))
        eps = np.finfo(dtype).eps
        # relative error: a few eps times cosh(r)^2 <= |x|^2 (the Minkowski products of
        # points at distance r from o), plus the rounding of the inputs to `dtype`: an
        # entry error eps |x| moves the chord's Lorentz square (size^2) by ~ size eps |x|^2,
        # a relative error eps |x|^2 / size in the distance
        rel = np.abs(d - size) / size
        x2 = np.sum(x * x, axis=1)
        bound = 16 * eps * x2 + 4 * eps * x2 / size
        assert np.all(rel <= bound), (size, rel.max())


def test_torus_log_is_exact_for_nearly_equal_angles_and_wraps():
    t = FlatTorus(1)
    x = np.array([[1.0], [0.1], [6.2]], dtype=np.float32)
    y = np.array([[1.0 + 1e-6], [6.2], [0.1]], dtype=np.float32)
    v = t.logmap(x, y)
    np.testing.assert_array_equal(v[0], y[0] - x[0])  # |delta| <= pi: no rounding at all
    np.testing.assert_allclose(v[1:, 0], [6.1 - 2 * np.pi, 2 * np.pi - 6.1], atol=8 * EPS32)
    # the cut locus: a difference of exactly pi stays pi
    assert t.logmap(np.array([[0.0]]), np.array([[np.pi]]))[0, 0] == np.pi


def test_errors_name_the_argument():
    s = Sphere(2)
    with pytest.raises(ValueError, match="`y`"):
        s.dist(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="`u`"):
        s.expmap(np.zeros((2, 3)), np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="`dim`"):
        Sphere(0)
    with pytest.raises(ValueError, match="`draws`"):
        s.source_sample(np.zeros((2, 2)))
    with pytest.raises(NotImplementedError):
        Hyperbolic(2).conditional_log_prob(np.ones((1, 3)), np.ones((1, 3)), 0.5)


# -- Hypothesis: the distance along a geodesic is its length, at every scale ------------
from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from flowspec.conformance.properties import _values  # noqa: E402


@given(log_angle=st.floats(-8.0, 0.0), antipodal=st.booleans(), case=st.data())
def test_sphere_and_so3_dist_of_a_geodesic_is_its_length(log_angle, antipodal, case):
    small = 10.0**log_angle
    angle = np.pi - small if antipodal else small
    for m in (Sphere(2), SO3()):
        # the point: the source map of drawn normal draws (a normalised vector: its norm
        # kept >= 0.1, so no zero vector and no underflow of its squares)
        q = case.draw(_values((1, *m.source_draws[1]), -4.0, 4.0))
        assume(np.linalg.norm(q) >= 0.1)
        x = m.source_sample(q)
        # the direction: the tangent part of a drawn vector, kept >= 0.1 of the vector
        # (a smaller one is the cancellation residue of v - <x, v> x: not tangent to eps)
        v = case.draw(_values(x.shape, -4.0, 4.0))
        u = m.proju(x, v)
        assume(m.norm(x, u)[0] >= 0.1 * max(np.linalg.norm(v), 1.0))
        u = u * (angle / m.norm(x, u)[0])
        y = m.expmap(x, u)
        d = m.dist(x, y)[0]
        # y carries a rounding error of a few eps (absolute); the angle then has an
        # absolute error of a few eps, i.e. a relative error of eps / angle for small ones
        assert abs(d - angle) <= 32 * EPS64 * max(angle, 1.0), (m, angle, d)
        # and the log's length recovers the angle below pi, to the same absolute error
        if not antipodal:
            assert abs(m.norm(x, m.logmap(x, y))[0] - angle) <= 32 * EPS64 * max(angle, 1.0)

"""The torch backend against the NumPy reference, closed forms and independent autograd.

Oracles: the NumPy core on the same inputs (float64 tight, float32 with a stated bound),
closed forms (linear fields, Gaussian flows), the continuity equation (Theorem 1),
EmpiricalMarginal's exact log-density, finite differences of parameters, and
torch.autograd's dense Jacobian.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import flowspec as fs  # noqa: E402
from flowspec.conformance.properties import _times, _values  # noqa: E402

fst = fs.backends.get("torch")

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)

shapes = st.sampled_from([(1, 1), (3, 2), (4, 5), (2, 3, 4), (5, 1, 2, 2)])


@st.composite
def normals(draw, shape, count=1):
    """``count`` float64 arrays of ``shape`` through the conformance kit's strategies
    (entries in [-4, 4], the range of the standard normals they replace), so shrinking
    shrinks the arrays."""
    values = _values(tuple(shape), -4.0, 4.0)
    return tuple(draw(values) for _ in range(count))


@st.composite
def pairs(draw, shapes=shapes):
    """(x0, x1) of one shape drawn from ``shapes``."""
    return draw(normals(draw(shapes), 2))


def _t_away(schedule, t: float, margin: float = 1e-3) -> float:
    """Keep t off the points where a coefficient is infinite."""
    for bad in schedule.divergent_at:
        if abs(t - bad) < margin:
            return bad - margin if bad > 0.5 else bad + margin
    return t


def _expm1_condition(schedule, alpha: float) -> float:
    """Error amplification of torch's expm1 derivative in the schedule's sigma."""
    if isinstance(schedule, fs.VariancePreserving):
        return 1.0 / alpha**2
    if isinstance(schedule, fs.Polynomial):
        return 1.0 / alpha
    return 1.0


def _t(torch_dtype=torch.float64, **kw):
    return torch.tensor(kw["values"], dtype=torch_dtype)


# ---------------------------------------------------------------------------------------
# registry and names
# ---------------------------------------------------------------------------------------
def test_registry_and_names():
    assert fs.backends.get("torch") is fst
    assert "torch" in fs.backends.available()
    for name in fst.__all__:
        assert hasattr(fst, name), name


# ---------------------------------------------------------------------------------------
# the fused training step against the NumPy reference
# ---------------------------------------------------------------------------------------
@given(xs=pairs(), t_scalar=st.floats(0.0, 1.0), per_sample=st.booleans(), data=st.data())
def test_sample_and_target_matches_reference_float64(schedule, xs, t_scalar, per_sample, data):
    sched = schedule
    path = fs.GaussianPath(sched)
    x0, x1 = xs
    shape = x0.shape
    if per_sample:  # the kit's times: both endpoints and their neighbours, often
        t = data.draw(_times(shape[0]))
        t = np.array([_t_away(sched, float(v)) for v in t])
    else:
        t = np.array(_t_away(sched, t_scalar))
    ref_xt, ref_u = path.sample_and_target(x0, x1, t)
    c = sched(t)
    xt, u = fst.sample_and_target(
        path, torch.from_numpy(x0), torch.from_numpy(x1), torch.from_numpy(t)
    )
    # Same coefficients (the core's code), then a*x1 + b*x0: addcmul may fuse the
    # multiply-add (one rounding less), so each entry differs by at most ~2 ulp of the
    # sum of magnitudes |a x1| + |b x0|.
    a = np.reshape(c.alpha, (-1,) + (1,) * (len(shape) - 1))
    s = np.reshape(c.sigma, a.shape)
    da = np.reshape(c.d_alpha, a.shape)
    ds = np.reshape(c.d_sigma, a.shape)
    np.testing.assert_array_less(
        np.abs(xt.numpy() - ref_xt), 2 * EPS64 * (np.abs(a * x1) + np.abs(s * x0)) + 1e-300
    )
    np.testing.assert_array_less(
        np.abs(u.numpy() - ref_u), 2 * EPS64 * (np.abs(da * x1) + np.abs(ds * x0)) + 1e-300
    )
    np.testing.assert_allclose(
        fst.sample(path, torch.from_numpy(x0), torch.from_numpy(x1), torch.from_numpy(t)).numpy(),
        xt.numpy(),
        rtol=0,
        atol=0,
    )
    np.testing.assert_allclose(
        fst.target(path, torch.from_numpy(x0), torch.from_numpy(x1), torch.from_numpy(t)).numpy(),
        u.numpy(),
        rtol=0,
        atol=0,
    )


@given(xs=pairs(), t=st.floats(0.0, 1.0))
def test_sample_and_target_float32_within_stated_bound(schedule, xs, t):
    sched = schedule
    path = fs.GaussianPath(sched)
    t = float(np.float32(_t_away(sched, t, margin=1e-2)))
    x0, x1 = (a.astype(np.float32) for a in xs)
    ref_xt, ref_u = path.sample_and_target(x0.astype(np.float64), x1.astype(np.float64), t)
    xt, u = fst.sample_and_target(path, torch.from_numpy(x0), torch.from_numpy(x1), t)
    c = sched(np.float64(t))
    # float32 evaluation of the coefficients: a handful of elementary functions, each
    # within 1-2 ulp, amplified by at most the condition number of exp/log of
    # arguments |T| <= 10.1 (VP) or |log(sigma_max/sigma_min)| <= 9.0 (VE), and by
    # 1/sigma <= 1/sqrt(1 - exp(-T(1e-2))) ~ 7 in the VP/LinearVP d_sigma near t = 1;
    # 256 eps32 of the magnitude scale covers that product with margin.
    scale_x = abs(float(c.alpha)) * np.abs(x1) + abs(float(c.sigma)) * np.abs(x0)
    scale_u = abs(float(c.d_alpha)) * np.abs(x1) + abs(float(c.d_sigma)) * np.abs(x0)
    np.testing.assert_array_less(np.abs(xt.numpy() - ref_xt), 256 * EPS32 * scale_x + 1e-30)
    np.testing.assert_array_less(np.abs(u.numpy() - ref_u), 256 * EPS32 * scale_u + 1e-30)
    assert xt.dtype == torch.float32 and u.dtype == torch.float32


def test_time_shapes_never_broadcast_along_event():
    # B == D: a (B,) t must act per sample, not along the event axis.
    path = fs.GaussianPath(fs.CondOT())
    x0 = torch.zeros(3, 3, dtype=torch.float64)
    x1 = torch.ones(3, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    xt = fst.sample(path, x0, x1, t)
    np.testing.assert_array_equal(xt.numpy(), np.repeat([[0.0], [0.5], [1.0]], 3, axis=1))
    for tt in (t.reshape(3, 1), torch.tensor(0.5, dtype=torch.float64), 0.5):
        fst.sample(path, x0, x1, tt)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(vu=pairs())
def test_cfm_loss_matches_reference(reduction, vu):
    v, u = vu
    ref = fs.cfm_loss(v, u, reduction=reduction)
    got = fst.cfm_loss(torch.from_numpy(v), torch.from_numpy(u), reduction=reduction)
    # Sums of n = v.size squares in different orders: relative error <= n eps.
    np.testing.assert_allclose(got.numpy(), ref, rtol=v.size * EPS64, atol=0)


def test_training_step_gradients_match_reference_autograd():
    # The fused step and the loss are differentiable like plain torch code.
    torch.manual_seed(0)
    path = fs.GaussianPath(fs.VariancePreserving())
    x1 = torch.randn(6, 3, dtype=torch.float64)
    x0 = torch.randn(6, 3, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64) * 0.9
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)

    def loss(fused: bool):
        if fused:
            xt, u = fst.sample_and_target(path, x0, x1, t)
            return fst.cfm_loss(xt @ w, u)
        xt, u = path.sample_and_target(x0, x1, t)
        return fs.cfm_loss(xt @ w, u)

    (g_fused,) = torch.autograd.grad(loss(True), w)
    (g_ref,) = torch.autograd.grad(loss(False), w)
    # Same math, different summation orders: a few eps relative to the gradient's size.
    torch.testing.assert_close(
        g_fused, g_ref, rtol=64 * EPS64, atol=64 * EPS64 * g_ref.abs().max().item()
    )


# ---------------------------------------------------------------------------------------
# random helpers
# ---------------------------------------------------------------------------------------
def test_random_helpers_respect_generator_dtype_device():
    g = torch.Generator().manual_seed(3)
    t1 = fst.sample_time(5, generator=g, dtype=torch.float64)
    g.manual_seed(3)
    t2 = fst.sample_time(5, generator=g, dtype=torch.float64)
    assert torch.equal(t1, t2) and t1.dtype == torch.float64 and t1.shape == (5,)
    assert bool(((t1 >= 0) & (t1 < 1)).all())
    t3 = fst.sample_time(1000, generator=g, low=0.0, high=1 - 1e-5)
    assert float(t3.max()) <= 1 - 1e-5 and t3.dtype == torch.get_default_dtype()
    like = torch.zeros(4, 3, 2, dtype=torch.float64)
    n = fst.sample_noise(like, generator=g)
    assert n.shape == like.shape and n.dtype == like.dtype and n.device == like.device
    n32 = fst.sample_noise((2, 3), generator=g, dtype=torch.float32)
    assert n32.shape == (2, 3) and n32.dtype == torch.float32
    z = fst.sample_rademacher((10_000,), generator=g, dtype=torch.float64)
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    # mean of 10^4 fair signs: standard deviation 0.01, 6 sigma bound.
    assert abs(float(z.mean())) < 0.06
    assert fst.sample_rademacher((3,), generator=g).dtype == torch.get_default_dtype()
    assert fst.sample_rademacher(like, generator=g).dtype == like.dtype
    with pytest.raises(ValueError, match="`batch`"):
        fst.sample_time(0)
    with pytest.raises(ValueError, match="`low` and `high`"):
        fst.sample_time(3, low=0.5, high=0.2)
    with pytest.raises(TypeError, match="`dtype`"):
        fst.sample_noise((2,), dtype=torch.int64)
    with pytest.raises(TypeError, match="`generator`"):
        fst.sample_noise((2,), generator=3)
    with pytest.raises(TypeError, match="`shape_or_like`"):
        fst.sample_noise("abc")
    with pytest.raises(ValueError, match="`generator`"):
        fst.sample_noise((2,), generator=g, device="meta")


# ---------------------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------------------
@given(
    event=st.sampled_from([(1,), (3,), (2, 3), (2, 2, 2)]),
    batch=st.integers(1, 4),
    data=st.data(),
)
def test_exact_divergence_of_linear_field_is_trace(event, batch, data):
    d = math.prod(event)
    (a,) = data.draw(normals((d, d)))
    (x,) = data.draw(normals((batch, *event)))
    a, x = torch.from_numpy(a), torch.from_numpy(x)

    def field(t, y):
        return (y.reshape(batch, d) @ a.T).reshape(y.shape) * (
            1.0 + t.reshape(-1, *[1] * len(event))
        )

    t = torch.from_numpy(data.draw(_times(batch)))
    got = fst.divergence(field, t, x)
    expected = (1.0 + t) * torch.trace(a)
    # A sum of d products, each exact to 1 ulp: d eps of sum |a_ii| (1 + t).
    torch.testing.assert_close(
        got, expected, rtol=0, atol=4 * d * EPS64 * float(a.diagonal().abs().sum() * 2)
    )


def _mlp(event, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    d = math.prod(event)
    net = torch.nn.Sequential(
        torch.nn.Linear(d + 1, 16), torch.nn.Tanh(), torch.nn.Linear(16, d)
    ).to(dtype)

    def field(t, x):
        b = x.shape[0]
        return net(torch.cat([x.reshape(b, d), t.reshape(b, 1)], 1)).reshape(x.shape)

    return net, field


@pytest.mark.parametrize("event", [(2,), (3, 2)])
def test_exact_divergence_matches_dense_jacobian(event):
    _, field = _mlp(event)
    x = torch.randn(4, *event, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    d = math.prod(event)
    jac = torch.autograd.functional.jacobian(lambda y: field(t, y), x).reshape(4, d, 4, d)
    expected = torch.stack([torch.trace(jac[b, :, b, :]) for b in range(4)])
    got = fst.divergence(field, t, x)
    # Forward- and reverse-mode products of the same network: rounding only.
    torch.testing.assert_close(got, expected, rtol=64 * EPS64, atol=64 * EPS64)
    torch.testing.assert_close(fst.divergence(field, t, x, chunk_size=1), got, rtol=0, atol=1e-15)


def test_divergence_of_conditional_field_matches_reference(schedule):
    path = fs.GaussianPath(schedule)
    # a fixed example (no Hypothesis): the seed only fixes x and x1
    rng = np.random.default_rng(1)
    x, x1 = rng.standard_normal((2, 4, 3, 2))
    t = np.array([0.1, 0.3, 0.6, 0.9])
    ref = path.divergence(x, x1, t)
    x1_t = torch.from_numpy(x1)
    got = fst.divergence(
        lambda tt, y: path.velocity(y, x1_t, tt), torch.from_numpy(t), torch.from_numpy(x)
    )
    # The Jacobian is (sigma'/sigma) I: d products of one coefficient, d ulp.
    np.testing.assert_allclose(got.numpy(), ref, rtol=8 * x[0].size * EPS64, atol=0)


def test_hutchinson_is_exact_for_a_diagonal_jacobian():
    # z^T diag(a) z = sum a_i z_i^2 = sum a_i for Rademacher z: zero variance.
    x = torch.randn(5, 2, 3, dtype=torch.float64)

    def field(t, y):
        return torch.sin(y) * (1 + t.reshape(-1, 1, 1))

    t = torch.rand(5, dtype=torch.float64)
    exact = fst.divergence(field, t, x)
    g = torch.Generator().manual_seed(0)
    est = fst.divergence(field, t, x, method="hutchinson", n_probes=3, generator=g)
    torch.testing.assert_close(est, exact, rtol=16 * EPS64, atol=16 * EPS64)


def test_hutchinson_mean_converges_to_exact():
    event = (3,)
    _, field = _mlp(event, seed=2)
    x = torch.randn(4, *event, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    d = 3
    jac = torch.autograd.functional.jacobian(lambda y: field(t, y), x).reshape(4, d, 4, d)
    blocks = torch.stack([jac[b, :, b, :] for b in range(4)])
    exact = blocks.diagonal(dim1=1, dim2=2).sum(1)
    # Variance of one Rademacher probe: 1/2 sum_{i != j} (J_ij + J_ji)^2.
    sym = blocks + blocks.transpose(1, 2)
    var = 0.5 * (sym**2).sum((1, 2)) - 0.5 * (sym.diagonal(dim1=1, dim2=2) ** 2).sum(1)
    n = 4096
    g = torch.Generator().manual_seed(1234)
    est = fst.divergence(field, t, x, method="hutchinson", n_probes=n, generator=g)
    # Mean of n iid bounded terms: by the CLT the error is N(0, var/n); 6 standard
    # deviations bound it with false-failure probability ~2e-9 per sample (seed fixed).
    bound = 6 * torch.sqrt(var / n) + 64 * EPS64
    assert bool(((est - exact).abs() <= bound).all()), (est, exact, bound)
    # The same generator state gives the same estimate.
    g.manual_seed(1234)
    again = fst.divergence(field, t, x, method="hutchinson", n_probes=n, generator=g)
    assert torch.equal(again, est)


def test_divergence_validation():
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="`field`"):
        fst.divergence(3, 0.5, x)
    with pytest.raises(ValueError, match="`method`"):
        fst.divergence(lambda t, y: y, 0.5, x, method="trace")
    with pytest.raises(ValueError, match="`n_probes`"):
        fst.divergence(lambda t, y: y, 0.5, x, method="hutchinson", n_probes=0)
    with pytest.raises(TypeError, match="field"):
        fst.divergence(lambda t, y: y[:, :2], 0.5, x)
    with pytest.raises(ValueError, match="`t`"):
        fst.divergence(lambda t, y: y, torch.zeros(3), x)


# ---------------------------------------------------------------------------------------
# continuity residual by autograd
# ---------------------------------------------------------------------------------------
@given(xs=pairs(), t=st.floats(0.05, 0.95))
def test_continuity_of_conditional_paths_by_autograd(schedule, xs, t):
    path = fs.GaussianPath(schedule)
    x, x1 = xs
    shape = x.shape
    x1_t = torch.from_numpy(x1)
    r = fst.continuity_residual(
        lambda tt, y: path.log_prob(y, x1_t, tt),
        lambda tt, y: path.velocity(y, x1_t, tt),
        t,
        torch.from_numpy(x),
    ).numpy()
    # Size of the terms that cancel: d |sigma'/sigma| (divergence), |u . score| and the
    # two parts of d/dt log p, |r|^2 |sigma'|/sigma^3 and |r| |alpha' x1| / sigma^2.
    c = path.schedule(np.float64(t))
    d = x[0].size
    res = (x - float(c.alpha) * x1).reshape(shape[0], -1)
    u = path.velocity(x, x1, t).reshape(shape[0], -1)
    score = path.score(x, x1, t).reshape(shape[0], -1)
    sig, dsig, dal = float(c.sigma), float(c.d_sigma), float(c.d_alpha)
    scale = (
        d * abs(dsig / sig)
        + np.linalg.norm(u, axis=1) * np.linalg.norm(score, axis=1)
        + (res**2).sum(1) * abs(dsig) / sig**3
        + np.linalg.norm(res, axis=1)
        * abs(dal)
        * np.linalg.norm(x1.reshape(shape[0], -1), axis=1)
        / sig**2
    )
    # Two parts: the time derivative is a chain rule through the schedule's
    # exp/expm1/sqrt compositions (~20 ops deep for VP), bounded by 128 eps; the sums
    # over d coordinates add 8 eps each. PyTorch differentiates expm1(y) as
    # expm1(y) + 1, which cancels where exp(y) is small: VP and Polynomial compute
    # sigma through expm1, so their autograd sigma' carries a relative error up to
    # eps / exp(y) (exp(y) = alpha^2 for VP, alpha for Polynomial).
    kappa = _expm1_condition(path.schedule, float(c.alpha))
    np.testing.assert_array_less(np.abs(r), (128 + 8 * d) * kappa * EPS64 * scale)


def test_continuity_residual_agrees_with_finite_differences_off_solution():
    # A density and a field that do NOT satisfy the equation: the residual is O(1)
    # and the autograd and finite-difference residuals must agree.
    w = torch.tensor([[0.3, -1.2], [0.7, 0.2]], dtype=torch.float64)

    def log_prob(t, x):
        return -0.5 * (x * x).sum(1) * (1 + t) + torch.sin(3 * t) * x[:, 0]

    def velocity(t, x):
        return torch.tanh(x @ w.T) * (1 + t[:, None] ** 2)

    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64) * 0.8 + 0.1
    got = fst.continuity_residual(log_prob, velocity, t, x)
    fd = fs.continuity_residual(log_prob, velocity, t, x)
    assert float(got.abs().min()) > 1e-3  # not a trivial zero
    # Central differences with h = eps^(1/3): error O(eps^(2/3)) ~ 4e-11 times the
    # third derivatives (O(10) here): 1e-8 leaves a wide margin.
    torch.testing.assert_close(got, fd, rtol=0, atol=1e-8)


def test_continuity_validation():
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="`log_prob`"):
        fst.continuity_residual(None, lambda t, y: y, 0.5, x)
    with pytest.raises(TypeError, match="log_prob"):
        fst.continuity_residual(lambda t, y: y, lambda t, y: y, 0.5, x)


# ---------------------------------------------------------------------------------------
# solvers
# ---------------------------------------------------------------------------------------
def _linear_fields(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((2, 2)) * 0.5
    b = rng.standard_normal(2)

    def np_field(t, x):
        return (x @ a.T) * np.cos(t)[:, None] + b

    at, bt = torch.from_numpy(a), torch.from_numpy(b)

    def torch_field(t, x):
        return (x @ at.T) * torch.cos(t)[:, None] + bt

    return np_field, torch_field


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_integrate_matches_reference(method):
    np_field, torch_field = _linear_fields()
    x0 = np.random.default_rng(1).standard_normal((5, 2))
    grid = np.linspace(0.0, 1.0, 17)
    ref = fs.integrate(np_field, x0, grid, method=method, return_path=True)
    got = fst.integrate(torch_field, torch.from_numpy(x0), grid, method=method, return_path=True)
    # 16 steps, each exact to a few ulp of |x| ~ 3 (fused add may round once less).
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=16 * 16 * EPS64 * 4)
    tensor_grid = fst.integrate(
        torch_field, torch.from_numpy(x0), torch.from_numpy(grid), method=method
    )
    np.testing.assert_allclose(tensor_grid.numpy(), ref[-1], rtol=0, atol=16 * 16 * EPS64 * 4)


def test_euler_matches_reference_and_float32_bound():
    np_field, torch_field = _linear_fields(2)
    x0 = np.random.default_rng(3).standard_normal((4, 2))
    ref = fs.euler(np_field, x0, steps=50, t0=0.2, t1=0.9, return_path=True)
    got = fst.euler(torch_field, torch.from_numpy(x0), steps=50, t0=0.2, t1=0.9, return_path=True)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=50 * 16 * EPS64 * 4)
    # float32: 50 steps, each with a few float32 roundings of O(1) values.
    got32 = fst.euler(
        lambda t, x: torch_field(t.double(), x.double()).float(),
        torch.from_numpy(x0).float(),
        steps=50,
        t0=0.2,
        t1=0.9,
    )
    np.testing.assert_allclose(got32.numpy(), ref[-1], rtol=0, atol=50 * 16 * EPS32 * 4)


def test_solver_validation():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="`steps`"):
        fst.euler(lambda t, y: y, x, steps=0)
    with pytest.raises(ValueError, match="`t0` and `t1`"):
        fst.euler(lambda t, y: y, x, t0=0.5, t1=0.5)
    with pytest.raises(ValueError, match="`method`"):
        fst.integrate(lambda t, y: y, x, [0.0, 1.0], method="dopri5")
    with pytest.raises(ValueError, match="`time_grid`"):
        fst.integrate(lambda t, y: y, x, [0.0, 1.0, 0.5])
    with pytest.raises(TypeError, match="field"):
        fst.euler(lambda t, y: y.double(), x, steps=2)
    with pytest.raises(TypeError, match="`x0`"):
        fst.euler(lambda t, y: y, np.zeros((2, 3)), steps=2)


# ---------------------------------------------------------------------------------------
# log-likelihood
# ---------------------------------------------------------------------------------------
def _std_normal_log_prob(x):
    d = x[0].numel()
    return -0.5 * (x * x).reshape(x.shape[0], -1).sum(1) - 0.5 * d * math.log(2 * math.pi)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_log_likelihood_matches_reference(method):
    _, field = _mlp((2,), seed=4)
    x1 = torch.randn(5, 2, dtype=torch.float64)
    grid = np.linspace(1.0, 0.0, 9)

    def div_callable(t, x):
        return fst.divergence(field, t, x)

    got = fst.log_likelihood(field, x1, _std_normal_log_prob, grid, method=method)
    with torch.no_grad():
        ref = fs.log_likelihood(
            field, x1, _std_normal_log_prob, grid, method=method, divergence=div_callable
        )
    # Same discretisation; the reference packs (x, f) in one array, we keep a tuple:
    # rounding only, 8 steps of O(1) quantities.
    torch.testing.assert_close(got, ref, rtol=0, atol=8 * 64 * EPS64)
    got_callable = fst.log_likelihood(
        field, x1, _std_normal_log_prob, grid, method=method, divergence=div_callable
    )
    torch.testing.assert_close(got_callable, got, rtol=0, atol=8 * 64 * EPS64)


def test_log_likelihood_closed_form_and_order():
    # v_t(x) = a x maps N(0, I) at t=0 to N(0, e^{2a} I) at t=1 (d = 2).
    a = 0.7
    x1 = torch.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=torch.float64)
    exact = -0.5 * (x1 * x1).sum(1) * math.exp(-2 * a) - math.log(2 * math.pi) - 2 * a
    errors = []
    for steps in (8, 16, 32):
        grid = np.linspace(1.0, 0.0, steps + 1)
        ll = fst.log_likelihood(lambda t, x: a * x, x1, _std_normal_log_prob, grid, method="euler")
        errors.append(float((ll - exact).abs().max()))
    slopes = np.diff(np.log(errors)) / np.diff(np.log([8, 16, 32]))
    # Euler is first order: halving h halves the error (slope -1 within 0.15).
    assert np.all(np.abs(slopes + 1.0) < 0.15), (errors, slopes)
    ll = fst.log_likelihood(
        lambda t, x: a * x, x1, _std_normal_log_prob, np.linspace(1, 0, 41), method="rk4"
    )
    # RK4 with h = 1/40 on a problem with derivatives O(a^5): error ~ (a h)^4 ~ 1e-7.
    torch.testing.assert_close(ll, exact, rtol=0, atol=1e-6)


def test_log_likelihood_hutchinson_exact_for_diagonal_and_unbiased():
    def field(t, x):
        return torch.tanh(x) * (1 + t[:, None])

    x1 = torch.randn(4, 3, dtype=torch.float64)
    grid = np.linspace(1.0, 0.0, 6)
    exact = fst.log_likelihood(field, x1, _std_normal_log_prob, grid, method="heun")
    g = torch.Generator().manual_seed(0)
    hutch = fst.log_likelihood(
        field, x1, _std_normal_log_prob, grid, method="heun", divergence="hutchinson", generator=g
    )
    # Diagonal Jacobian: every probe gives the exact trace.
    torch.testing.assert_close(hutch, exact, rtol=0, atol=64 * EPS64)


def test_log_likelihood_gradients_flow_and_match_finite_differences():
    torch.manual_seed(0)
    w = torch.tensor([[0.2, -0.4], [0.3, 0.1]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.1, -0.2], dtype=torch.float64, requires_grad=True)

    def make_field(w, b):
        def field(t, x):
            return torch.tanh(x @ w.T + b) * (1 + t[:, None])

        return field

    x1 = torch.randn(3, 2, dtype=torch.float64)
    grid = np.linspace(1.0, 0.0, 5)

    def nll(w, b, divergence="exact", seed=None):
        g = None if seed is None else torch.Generator().manual_seed(seed)
        return -fst.log_likelihood(
            make_field(w, b),
            x1,
            _std_normal_log_prob,
            grid,
            method="midpoint",
            divergence=divergence,
            generator=g,
        ).mean()

    for divergence, seed in (("exact", None), ("hutchinson", 7)):
        loss = nll(w, b, divergence, seed)
        gw, gb = torch.autograd.grad(loss, (w, b))
        assert float(gw.abs().sum()) > 0 and float(gb.abs().sum()) > 0
        h = 1e-5
        for param, grad in ((w, gw), (b, gb)):
            flat = param.detach().clone().reshape(-1)
            for i in range(flat.numel()):
                plus, minus = flat.clone(), flat.clone()
                plus[i] += h
                minus[i] -= h
                args_p = (
                    (plus.reshape(param.shape), b.detach()) if param is w else (w.detach(), plus)
                )
                args_m = (
                    (minus.reshape(param.shape), b.detach()) if param is w else (w.detach(), minus)
                )
                with torch.no_grad():
                    fd = (nll(*args_p, divergence, seed) - nll(*args_m, divergence, seed)) / (2 * h)
                # Central difference: truncation O(h^2) ~ 1e-10 times third derivatives,
                # rounding O(eps / h) ~ 2e-11 times |nll|: 1e-7 has ample margin.
                assert abs(float(fd) - float(grad.reshape(-1)[i])) < 1e-7, (divergence, i)


def test_log_likelihood_validation():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="`time_grid`"):
        fst.log_likelihood(lambda t, y: y, x, _std_normal_log_prob, [0.0, 1.0])
    with pytest.raises(ValueError, match="`time_grid`"):
        fst.log_likelihood(lambda t, y: y, x, _std_normal_log_prob, [1.5, 0.0])
    with pytest.raises(ValueError, match="`divergence`"):
        fst.log_likelihood(lambda t, y: y, x, _std_normal_log_prob, [1.0, 0.0], divergence="trace")
    with pytest.raises(TypeError, match="`divergence`"):
        fst.log_likelihood(lambda t, y: y, x, _std_normal_log_prob, [1.0, 0.0], divergence=3)
    with pytest.raises(TypeError, match="`log_p0`"):
        fst.log_likelihood(lambda t, y: y, x, None, [1.0, 0.0])
    with pytest.raises(TypeError, match="log_p0"):
        fst.log_likelihood(lambda t, y: y, x, lambda y: y, [1.0, 0.0])


def test_autograd_divergence_of_empirical_marginal_at_a_tie():
    # x = 0 is equidistant from (0, 1) and (1, 0): the two largest log-weights tie and
    # the posterior is (1/2, 1/2). For CondOT(0) at t = 1/2 (alpha = sigma = 1/2,
    # alpha' = 1, sigma' = -1) the divergence of eq. 8's field is
    # D sigma'/sigma + (alpha' - alpha sigma'/sigma) (alpha / sigma^2) tr Cov[x1 | x]
    # = -4 + 2 * 2 * 1/2 = -2. Autograd must follow the point the reduction anchors on
    # (a max() that averages the derivative over tied entries gave -3).
    path = fs.GaussianPath(fs.CondOT())
    data = np.array([[0.0, 1.0], [1.0, 0.0]])
    m = fs.EmpiricalMarginal(path, torch.from_numpy(data))
    x = torch.zeros((1, 2), dtype=torch.float64, requires_grad=True)
    v = m.velocity(x, 0.5)
    div = sum(torch.autograd.grad(v[0, i], x, retain_graph=True)[0][0, i] for i in range(2))
    closed = float(fs.EmpiricalMarginal(path, data).divergence(np.zeros((1, 2)), 0.5)[0])
    # both exact up to a few roundings of O(1) terms
    assert abs(float(div) - closed) <= 16 * np.finfo(np.float64).eps
    assert abs(closed + 2.0) <= 16 * np.finfo(np.float64).eps


# ---------------------------------------------------------------------------------------
# EmpiricalMarginal: Theorem 1 by autograd and the exact likelihood
# ---------------------------------------------------------------------------------------
@given(
    n=st.integers(1, 6),
    event=st.sampled_from([(1,), (2,), (2, 2)]),
    t=st.floats(0.05, 0.95),
    draw=st.data(),
)
def test_continuity_of_empirical_marginal_by_autograd(schedule, n, event, t, draw):
    (data,) = draw.draw(normals((n, *event)))
    (x,) = draw.draw(normals((3, *event)))
    x = x * 1.5
    # Known defect of autograd through EmpiricalMarginal.velocity (its values are
    # exact), excluded here: two distinct data points within ~1e-8 of each other (the
    # marginal's exact band): the divergence errs by ~1e-11 relative (measured against
    # 50-digit arithmetic). Ties of the largest log-weights are covered below.
    flat = data.reshape(n, -1)
    gaps = np.abs(flat[:, None, :] - flat[None, :, :]).max(axis=2)
    assume(not np.any((gaps > 0) & (gaps < 1e-6)))
    data = torch.from_numpy(data)
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data)
    x = torch.from_numpy(x)
    r = fst.continuity_residual(
        lambda tt, y: m.log_prob(y, tt), lambda tt, y: m.velocity(y, tt), t, x
    )
    # Terms' size: |div u| + |u . score| + |d/dt log p| where the latter is their sum;
    # the posterior-weighted sums inside add the same size per data point.
    div = m.divergence(x, t)
    transport = (m.velocity(x, t) * m.score(x, t)).reshape(3, -1).sum(1)
    c = schedule(torch.tensor(t, dtype=torch.float64))
    d = x[0].numel()
    # d/dt log p differentiates sigma by autograd: torch's expm1 derivative carries a
    # relative error up to eps / exp(y) in sigma' (kappa, as in the conditional test
    # above), so each term through sigma'/sigma carries kappa. It dominates where the
    # other terms vanish (x and the data at 0: only the normalisation -d sigma'/sigma).
    kappa = _expm1_condition(schedule, float(c.alpha))
    rate = abs(float(c.d_sigma / c.sigma)) * kappa
    scale = (
        div.abs()
        + transport.abs()
        + d * rate
        + (
            (m.velocity(x, t) ** 2).reshape(3, -1).sum(1)
            + (m.score(x, t) ** 2).reshape(3, -1).sum(1)
        )
        * (1 + rate + abs(float(c.d_alpha)))
    )
    # 64 d n eps of the scale: sums over d coordinates and n data points of terms
    # each exact to a few ulp.
    assert bool((r.abs() <= 64 * d * n * EPS64 * scale).all()), (r, scale)


def test_log_likelihood_of_exact_marginal_field_reproduces_log_prob():
    torch.manual_seed(0)
    data = torch.randn(6, 2, dtype=torch.float64)
    m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT(sigma_min=0.2)), data)
    x1 = data[:4] + 0.3 * torch.randn(4, 2, dtype=torch.float64)
    exact = m.log_prob(x1, 1.0)

    def field(t, x):
        return m.velocity(x, t)

    def log_p0(x):
        return m.log_prob(x, 0.0)

    lls = [
        fst.log_likelihood(field, x1, log_p0, np.linspace(1.0, 0.0, n + 1), method="rk4")
        for n in (16, 32)
    ]
    errors = [(ll - exact).abs() for ll in lls]
    # The solver error falls with the step count, and once it at least halves per
    # doubling (true here, RK4 is past its pre-asymptotic range) the error at 32 steps
    # is bounded by the difference of the two solutions: |e(32)| <= |ll(16) - ll(32)|.
    assert bool((errors[1] < errors[0]).all()), errors
    assert bool((errors[1] <= (lls[0] - lls[1]).abs()).all()), (lls, exact)
    # The exact divergence by autograd equals the closed form along the way.
    closed = fst.log_likelihood(
        field,
        x1,
        log_p0,
        np.linspace(1.0, 0.0, 17),
        method="rk4",
        divergence=lambda t, x: m.divergence(x, t),
    )
    # Rounding only (64 evaluations of O(1) sums of 6 data points).
    torch.testing.assert_close(closed, lls[0], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------
# torch.compile and CUDA graphs
# ---------------------------------------------------------------------------------------
def test_compiled_step_and_euler_match_eager():
    torch._dynamo.reset()
    path = fs.GaussianPath(fs.VariancePreserving())
    x0 = torch.randn(16, 3)
    x1 = torch.randn(16, 3)
    t = torch.rand(16) * 0.9

    def step(x0, x1, t):
        xt, u = fst.sample_and_target(path, x0, x1, t)
        return xt, u, fst.cfm_loss(xt, u)

    compiled = torch.compile(step, fullgraph=True)
    for got, want in zip(compiled(x0, x1, t), step(x0, x1, t), strict=True):
        # Inductor may fuse and reorder float32 ops: a few ulp of the O(10) values.
        torch.testing.assert_close(got, want, rtol=16 * EPS32, atol=16 * EPS32 * 10)

    w = torch.randn(3, 3) * 0.3

    def field(t, x):
        return torch.tanh(x @ w) * (1 + t[:, None])

    def sample(x):
        return fst.euler(field, x, steps=4)

    compiled_euler = torch.compile(sample, fullgraph=True)
    torch.testing.assert_close(compiled_euler(x0), sample(x0), rtol=64 * EPS32, atol=64 * EPS32)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.gpu
def test_cuda_graph_capture_of_step_and_euler():
    device = torch.device("cuda")
    path = fs.GaussianPath(fs.CondOT())
    g = torch.Generator(device=device).manual_seed(0)
    x1 = torch.randn(64, 2, device=device, generator=g)
    x0 = fst.sample_noise(x1, generator=g)
    t = fst.sample_time(64, generator=g, device=device)
    assert x0.device.type == "cuda" and t.device.type == "cuda"
    w = torch.randn(2, 2, device=device) * 0.3

    def work():
        xt, u = fst.sample_and_target(path, x0, x1, t)
        return xt, u, fst.euler(lambda s, y: torch.tanh(y @ w) * (1 + s[:, None]), xt, steps=8)

    expected = work()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        work()  # warm-up on a side stream, as CUDA graphs require
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = work()
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip(out, expected, strict=True):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------
# validation of the fused step
# ---------------------------------------------------------------------------------------
def test_fused_step_validation():
    path = fs.GaussianPath(fs.CondOT())
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="`path`"):
        fst.sample_and_target(fs.CondOT(), x, x, 0.5)
    with pytest.raises(TypeError, match="`x0`"):
        fst.sample_and_target(path, np.zeros((2, 3)), x, 0.5)
    with pytest.raises(TypeError, match="`x1`"):
        fst.sample_and_target(path, x, x.double(), 0.5)
    with pytest.raises(TypeError, match="`x0`"):
        fst.sample_and_target(path, torch.zeros(2, 3, dtype=torch.int64), x, 0.5)
    with pytest.raises(ValueError, match="same shape"):
        fst.sample_and_target(path, x, torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match="`t`"):
        fst.sample_and_target(path, x, x, torch.zeros(3))
    with pytest.raises(ValueError, match="`t`"):
        fst.sample_and_target(path, x, x, 1.5)
    with pytest.raises(TypeError, match="`t`"):
        fst.sample_and_target(path, x, x, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="`t`"):
        fst.sample_and_target(path, x, x, True)
    with pytest.raises(ValueError, match="`x0`"):
        fst.sample_and_target(path, torch.zeros(()), torch.zeros(()), 0.5)
    with pytest.raises(ValueError, match="`reduction`"):
        fst.cfm_loss(x, x, reduction="avg")

"""Low precision and edge inputs: one contract for every dtype, batch size and caller."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import flowspec as fs
from flowspec import cli

EPS16 = float(np.finfo(np.float16).eps)


# -- low precision ----------------------------------------------------------------------


def test_torch_cfm_loss_in_float16_is_the_core_mean():
    torch = pytest.importorskip("torch")
    fst = fs.backends.get("torch")
    # every sample's squared norm is 100 (float16-representable); the sum over the
    # batch, 1e4 * 100, is not (float16 max 65504), the mean is
    v = torch.full((100, 10), 3.1623, dtype=torch.float16)
    u = torch.zeros_like(v)
    core = fs.cfm_loss(v.numpy(), u.numpy())
    out = fst.cfm_loss(v, u)
    assert out.dtype == torch.float16 and bool(torch.isfinite(out))
    # both: per-sample norms rounded to float16, their mean: a few ulp of 100
    assert abs(float(out) - float(core)) <= 4 * EPS16 * 100


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16", "float32"])
def test_torch_sample_time_stays_in_low_high_as_represented(dtype_name):
    torch = pytest.importorskip("torch")
    fst = fs.backends.get("torch")
    dtype = getattr(torch, dtype_name)
    low, high = 1e-3, 1.0 - 1e-5
    t = fst.sample_time(
        100_000, generator=torch.Generator().manual_seed(0), dtype=dtype, low=low, high=high
    )
    values = t.double()
    assert bool((values >= low).all()) and bool((values < high).all())
    with pytest.raises(ValueError, match="`low` and `high`"):
        fst.sample_time(3, dtype=torch.bfloat16, low=0.999, high=0.9995)


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16", "float32"])
def test_jax_sample_time_stays_in_low_high_as_represented(dtype_name):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    fsj = fs.backends.get("jax")
    dtype = getattr(jnp, dtype_name)
    low, high = 1e-3, 1.0 - 1e-5
    t = np.asarray(fsj.sample_time(jax.random.key(0), 100_000, dtype=dtype, low=low, high=high))
    values = t.astype(np.float64)
    assert t.dtype == np.dtype(dtype)
    assert np.all(values >= low) and np.all(values < high)
    with pytest.raises(ValueError, match="`low` and `high`"):
        fsj.sample_time(jax.random.key(0), 3, dtype=jnp.bfloat16, low=0.999, high=0.9995)


@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64"])
@pytest.mark.parametrize("library", ["numpy", "torch", "jax.numpy", "array_api_strict"])
def test_representable_interval_is_the_dtype_values_in_low_high(library, dtype_name):
    # one definition for every backend's sample_time (torch, JAX, CuPy pass their module)
    xp = pytest.importorskip(library)
    if library == "jax.numpy" and dtype_name == "float64":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX float64 needs jax_enable_x64 (off here: it would be float32)")
    if not hasattr(xp, dtype_name):
        pytest.skip(f"{library} has no {dtype_name}")
    dtype = getattr(xp, dtype_name)
    for low, high in [(1e-3, 1.0 - 1e-5), (1e-9, 1.0 - 1e-9), (0.0, 1.0), (0.25, 0.75)]:
        lo, hi = fs.validation.representable_interval(low, high, dtype, xp)
        # in the interval, and the neighbours outside it: the extreme values of the dtype
        below = float(np.nextafter(np.asarray(lo, dtype=dtype_name), -np.inf))
        above = float(np.nextafter(np.asarray(hi, dtype=dtype_name), np.inf))
        assert low <= lo <= hi < high and below < low and above >= high
        assert (lo, hi) == fs.validation.representable_interval(low, high, np.dtype(dtype_name))
    with pytest.raises(ValueError, match="`low` and `high`"):
        fs.validation.representable_interval(0.5, 0.5 + 1e-17, dtype, xp)


def test_variance_exploding_with_extreme_bounds_is_finite():
    c = fs.VarianceExploding(1e-200, 1e200)(np.array([0.0, 0.5, 1.0]))
    # sigma_t = exp(log sigma_min + (1 - t) log(sigma_max / sigma_min)): one rounding of
    # an exponent of size ~460, so a relative error ~ 460 eps
    np.testing.assert_allclose(c.sigma, [1e200, 1.0, 1e-200], rtol=1024 * np.finfo(float).eps)
    assert np.all(np.isfinite(c.d_sigma))


def test_float16_score_and_log_prob_where_sigma_squared_underflows():
    # CondOT(1e-4) at t = 1: sigma = 1e-4, sigma^2 = 1e-8 underflows in float16 (least
    # subnormal 6e-8), the score and the log-density do not
    path = fs.GaussianPath(fs.CondOT(sigma_min=1e-4))
    x1 = np.array([[0.5, -0.25, 1.0]])
    r = np.array([[1e-4, -2e-4, 0.0]])
    x = x1 + r
    ref_score = path.score(x, x1, 1.0)
    ref_lp = path.log_prob(x, x1, 1.0)
    x16, x116 = x.astype(np.float16), x1.astype(np.float16)
    score = path.score(x16, x116, np.float16(1.0))
    lp = path.log_prob(x16, x116, np.float16(1.0))
    assert score.dtype == np.float16 and lp.dtype == np.float16
    assert np.all(np.isfinite(score)) and np.all(np.isfinite(lp))
    # x and x1 rounded to float16 move r by up to eps16 |x| ~ 5e-4 (more than r): the
    # score -r / sigma^2 moves by eps16 |x| / sigma^2 per entry, the log-density by
    # |r| eps16 |x| / sigma^2 per entry plus the rounding of d log sigma (~ 28)
    r16 = x16.astype(np.float64) - x116.astype(np.float64)
    exact16 = path.score(x16.astype(np.float64), x116.astype(np.float64), 1.0)
    np.testing.assert_allclose(score, exact16, rtol=4 * EPS16, atol=4 * EPS16)
    lp16 = path.log_prob(x16.astype(np.float64), x116.astype(np.float64), 1.0)
    assert abs(float(lp[0]) - float(lp16[0])) <= 8 * EPS16 * (abs(float(lp16[0])) + 30)
    assert np.all(np.isfinite(ref_score)) and np.isfinite(ref_lp[0]) and r16.shape == r.shape


# -- empty batches: one rule ------------------------------------------------------------


def _core_empty_calls():
    e = np.zeros((0, 2))
    t0 = np.zeros(0)
    path = fs.GaussianPath(fs.CondOT())
    m = fs.EmpiricalMarginal(path, np.ones((3, 2)))
    return {
        "cfm_loss": lambda: fs.cfm_loss(e, e),
        "sample": lambda: path.sample(e, e, t0),
        "log_prob": lambda: path.log_prob(e, e, t0),
        "marginal.velocity": lambda: m.velocity(e, 0.5),
        "marginal.log_prob": lambda: m.log_prob(e, 0.5),
        "euler": lambda: fs.euler(lambda t, x: x, e, steps=2),
        "integrate": lambda: fs.integrate(lambda t, x: x, e, [0.0, 1.0]),
        "continuity_residual": lambda: fs.continuity_residual(
            lambda t, x: np.zeros(x.shape[0]), lambda t, x: x, 0.5, e
        ),
    }


@pytest.mark.parametrize("name", list(_core_empty_calls()))
def test_an_empty_batch_is_a_value_error_naming_the_argument(name):
    with pytest.raises(ValueError, match=r"`\w+` must hold at least one sample \(B >= 1\)"):
        _core_empty_calls()[name]()


def test_an_empty_batch_on_torch_and_jax():
    torch = pytest.importorskip("torch")
    fst = fs.backends.get("torch")
    e = torch.zeros(0, 2, dtype=torch.float64)
    path = fs.GaussianPath(fs.CondOT())
    with pytest.raises(ValueError, match="at least one sample"):
        fst.cfm_loss(e, e)
    with pytest.raises(ValueError, match="at least one sample"):
        path.log_prob(e, e, torch.zeros(0, dtype=torch.float64))
    jnp = pytest.importorskip("jax.numpy")
    fsj = fs.backends.get("jax")
    ej = jnp.zeros((0, 2), dtype=jnp.float32)
    with pytest.raises(ValueError, match="at least one sample"):
        fsj.cfm_loss(ej, ej)


# -- times, methods, aliasing -----------------------------------------------------------


@pytest.mark.parametrize("t", [np.float32(0.5), np.int64(1), Fraction(1, 2), 0.5, 1])
def test_schedule_call_takes_every_real_number_the_paths_take(t):
    c = fs.CondOT()(t)
    assert float(c.alpha) == float(t)
    x = np.zeros((1, 2))
    fs.GaussianPath(fs.CondOT()).sample(x, x + 1.0, t)  # the paths accept it too


def test_a_method_that_is_not_a_string_is_a_value_error():
    with pytest.raises(ValueError, match="`method`"):
        fs.integrate(lambda t, x: x, np.zeros((1, 2)), [0.0, 1.0], method=["euler"])


def test_coefficients_never_alias_the_time():
    t = np.array([0.25, 0.5])
    c = fs.CondOT()(t)
    assert c.alpha is not t and not np.shares_memory(c.alpha, t)
    torch = pytest.importorskip("torch")
    tt = torch.tensor([[0.25], [0.5]], dtype=torch.float64)
    ct = fs.backends.get("torch").coefficients(
        fs.GaussianPath(fs.CondOT()), tt, torch.zeros(2, 3, dtype=torch.float64)
    )
    ct.alpha.add_(1.0)
    assert tt.flatten().tolist() == [0.25, 0.5]


def test_continuity_residual_names_its_step_near_the_endpoint():
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    x1 = np.ones((1, 2))
    with pytest.raises(ValueError, match=r"finite-difference step h = .*`t` must lie at least h"):
        fs.continuity_residual(
            lambda t, x: path.log_prob(x, x1, t),
            lambda t, x: path.velocity(x, x1, t),
            1.0,
            np.zeros((1, 2)),
        )


# -- environment ------------------------------------------------------------------------


def test_the_kit_leaves_jax_x64_as_the_caller_set_it():
    jax = pytest.importorskip("jax")
    from flowspec.conformance.adapter import LibraryAdapter
    from flowspec.conformance.library import check_library

    before = bool(jax.config.jax_enable_x64)
    a = LibraryAdapter("jax", fs.CondOT())
    v = a.velocity(np.ones((2, 3)), np.zeros((2, 3)), np.full(2, 0.3))
    assert str(v.dtype) == "float64"  # the kit still computes in float64
    assert bool(jax.config.jax_enable_x64) == before
    check_library("jax")
    assert bool(jax.config.jax_enable_x64) == before


# -- the command line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "--seed=-1"], "--seed: expected an integer >= 0"),
        (["check", "--max-examples", "0"], "--max-examples: expected an integer >= 1"),
        (["check", "--json", "/nonexistent-dir/report.json"], "--json: the directory"),
        (["check", "--skips", "/nonexistent-file"], "--skips: no such file"),
        (["check", "--xfails", "/nonexistent-file"], "--xfails: no such file"),
        (["golden", ""], "DIR: expected a directory"),
    ],
)
def test_cli_rejects_bad_arguments_up_front(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_golden_onto_an_existing_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        cli.main(["golden", str(target)])
    assert exc.value.code == 2
    assert "is not a directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_python_dash_m_flowspec_runs():
    out = subprocess.run(
        [sys.executable, "-m", "flowspec", "check", "--seed=-1"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "--seed" in out.stderr

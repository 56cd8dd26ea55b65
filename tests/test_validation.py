"""Bad inputs fail with a ValueError or TypeError that names the argument."""

from __future__ import annotations

import numpy as np
import pytest

import flowspec as fs

PATH = fs.GaussianPath(fs.CondOT())
X = np.zeros((4, 3))
F32 = np.zeros((4, 3), dtype=np.float32)

BAD = [
    # (call, exception, text the message must contain)
    (lambda: PATH.sample(X, np.zeros((4, 2)), 0.5), ValueError, "`x0` and `x1`"),
    (lambda: PATH.sample(X, np.zeros((3, 3)), 0.5), ValueError, "`x0` and `x1`"),
    (lambda: PATH.sample(X, F32, 0.5), TypeError, "`x1`"),
    (lambda: PATH.sample(X.astype(np.int64), X.astype(np.int64), 0.5), TypeError, "`x0`"),
    (lambda: PATH.sample(X, X, np.zeros(3)), ValueError, "`t`"),
    (lambda: PATH.sample(X, X, np.zeros((4, 3))), ValueError, "`t`"),
    (lambda: PATH.sample(X, X, np.zeros((1,))), ValueError, "`t`"),
    (lambda: PATH.sample(X, X, np.zeros(4, dtype=np.float32)), TypeError, "`t`"),
    (lambda: PATH.sample(X, X, 1.5), ValueError, "`t`"),
    (lambda: PATH.sample(X, X, -0.1), ValueError, "`t`"),
    (lambda: PATH.sample(X, X, np.array([0.1, 0.2, 0.3, 1.2])), ValueError, "`t`"),
    (lambda: PATH.sample(X, X, float("nan")), ValueError, "`t`"),
    (lambda: PATH.sample(X, X, "0.5"), TypeError, "`t`"),
    (lambda: PATH.sample(X, X, True), TypeError, "`t`"),
    (lambda: PATH.sample(X, X.tolist(), 0.5), TypeError, "`x1`"),
    (lambda: PATH.sample(np.zeros(()), np.zeros(()), 0.5), ValueError, "`x0`"),
    (lambda: PATH.velocity(X, np.zeros((4, 4)), 0.5), ValueError, "`x` and `x1`"),
    (lambda: PATH.log_prob(X, F32, 0.5), TypeError, "`x1`"),
    (lambda: PATH.score(X, X, np.zeros((4, 1, 1))), ValueError, "`t`"),
    (lambda: PATH.divergence(X, X, np.zeros((2, 2))), ValueError, "`t`"),
    (lambda: fs.GaussianPath("ot"), TypeError, "`schedule`"),
    (lambda: fs.GaussianPath(fs.CondOT).sample(X, X, 0.5), TypeError, "`schedule`"),
    (lambda: fs.continuity_residual(None, lambda t, x: x, 0.5, X), TypeError, "`log_prob`"),
    (lambda: fs.continuity_residual(lambda t, x: t, None, 0.5, X), TypeError, "`velocity`"),
    (
        lambda: fs.continuity_residual(lambda t, x: t, lambda t, x: x, 0.5, X.astype(int)),
        TypeError,
        "`x`",
    ),
    (
        lambda: fs.continuity_residual(lambda t, x: x, lambda t, x: x, 0.5, X),
        TypeError,
        "`log_prob(t, x)`",
    ),
    (
        lambda: fs.continuity_residual(lambda t, x: t, lambda t, x: t, 0.5, X),
        TypeError,
        "`velocity(t, x)`",
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "text"), BAD, ids=[b[2] + f"-{i}" for i, b in enumerate(BAD)]
)
def test_bad_input_names_the_argument(call, exc, text):
    with pytest.raises(exc) as info:
        call()
    assert text in str(info.value)


def test_mixed_libraries_name_both_arguments():
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match=r"`x0`.*`x1`"):
        PATH.sample(X, strict.asarray(X), 0.5)
    with pytest.raises(TypeError, match="`t`"):
        PATH.sample(X, X, strict.asarray(0.5, dtype=strict.float64))


def test_inputs_are_not_mutated():
    x0, x1, t = np.ones((2, 2)), np.full((2, 2), 2.0), np.array([0.2, 0.7])
    copies = [a.copy() for a in (x0, x1, t)]
    for method in ("sample", "target", "velocity", "log_prob", "score", "divergence"):
        getattr(PATH, method)(x0, x1, t)
    for a, b in zip((x0, x1, t), copies, strict=True):
        assert np.array_equal(a, b)


def test_device_values_are_not_read_under_jit():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jax.config.update("jax_enable_x64", True)
    path = fs.GaussianPath(fs.Cosine())
    fn = jax.jit(lambda x0, x1, t: path.sample_and_target(x0, x1, t))
    x = jnp.ones((3, 2))
    out = fn(x, x, jnp.asarray([0.1, 0.5, 0.9]))
    want = path.sample_and_target(np.ones((3, 2)), np.ones((3, 2)), np.array([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(np.asarray(out[0]), want[0], rtol=1e-15)


def test_jax_weakly_typed_time_follows_x():
    # under x64 a Python float passed through jax.jit becomes a weakly typed float64
    # scalar; like the number itself it takes x's dtype, while a strongly typed float64
    # time against float32 x is still a mismatch
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jax.config.update("jax_enable_x64", True)
    path = fs.GaussianPath(fs.CondOT())
    x = jnp.ones((2, 2), dtype=jnp.float32)
    x_t, u = jax.jit(lambda x, t: path.sample_and_target(x, x, t))(x, 0.5)
    assert x_t.dtype == u.dtype == jnp.float32
    with pytest.raises(TypeError, match="`t`"):
        path.sample(x, x, jnp.asarray(0.5, dtype=jnp.float64))

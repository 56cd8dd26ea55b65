"""cfm_loss: per-sample squared norm over all event axes, reductions, validation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs

EPS64 = float(np.finfo(np.float64).eps)


@given(
    shape=st.sampled_from([(1,), (3, 3), (2, 5), (4, 3, 2, 2)]),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_definition(xp, shape, seed):
    rng = np.random.default_rng(seed)
    v, u = rng.standard_normal(shape), rng.standard_normal(shape)
    per = np.sum((v - u).reshape(shape[0], -1) ** 2, axis=1)  # ||v - u||^2 (eq. 9)
    va, ua = xp.asarray(v), xp.asarray(u)
    # summation order may differ between libraries: a few ulps of the sum
    tol = 8 * EPS64 * v[0].size
    np.testing.assert_allclose(to_numpy(fs.cfm_loss(va, ua, reduction="none")), per, rtol=tol)
    np.testing.assert_allclose(float(to_numpy(fs.cfm_loss(va, ua))), per.mean(), rtol=tol)
    np.testing.assert_allclose(float(to_numpy(fs.cfm_loss(va, ua, "sum"))), per.sum(), rtol=tol)


def test_shapes_and_dtype(xp):
    for dtype in (xp.float32, xp.float64):
        v = xp.ones((4, 2, 3), dtype=dtype)
        assert tuple(fs.cfm_loss(v, v, reduction="none").shape) == (4,)
        out = fs.cfm_loss(v, 2 * v)
        assert tuple(out.shape) == () and out.dtype == dtype
        assert float(to_numpy(out)) == 6.0


def test_gradient_flows_in_torch():
    torch = pytest.importorskip("torch")
    v = torch.ones((3, 2), dtype=torch.float64, requires_grad=True)
    fs.cfm_loss(v, torch.zeros_like(v)).backward()
    # d/dv mean_b ||v_b||^2 = 2 v / B
    assert torch.allclose(v.grad, torch.full_like(v, 2.0 / 3.0))


@pytest.mark.parametrize(
    ("v", "u", "kw", "exc", "name"),
    [
        (np.ones((2, 3)), np.ones((3, 2)), {}, ValueError, "`v` and `u`"),
        (np.ones((2, 3)), np.ones((2, 3), dtype=np.float32), {}, TypeError, "`u`"),
        (np.ones((2, 3), dtype=np.int64), np.ones((2, 3)), {}, TypeError, "`v`"),
        (np.ones((2, 3)), np.ones((2, 3)), {"reduction": "max"}, ValueError, "`reduction`"),
        (np.ones(()), np.ones(()), {}, ValueError, "`v`"),
        (np.ones((2, 3)), [[1.0] * 3] * 2, {}, TypeError, "`u`"),
    ],
)
def test_bad_inputs(v, u, kw, exc, name):
    with pytest.raises(exc, match=name):
        fs.cfm_loss(v, u, **kw)

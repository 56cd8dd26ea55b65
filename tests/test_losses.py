"""cfm_loss: per-sample squared norm over all event axes, reductions, validation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec.conformance.properties import _values

EPS64 = float(np.finfo(np.float64).eps)
TINY64 = float(np.finfo(np.float64).tiny)


@st.composite
def pairs(draw):
    """(v, u) of one shape through the conformance kit's strategies (entries in [-4, 4],
    the range of the standard normals they replace), so shrinking shrinks the arrays."""
    shape = draw(st.sampled_from([(1,), (3, 3), (2, 5), (4, 3, 2, 2)]))
    values = _values(shape, -4.0, 4.0)
    return draw(values), draw(values)


@given(vu=pairs())
def test_matches_definition(xp, vu):
    v, u = vu
    shape = v.shape
    per = np.sum((v - u).reshape(shape[0], -1) ** 2, axis=1)  # ||v - u||^2 (eq. 9)
    va, ua = xp.asarray(v), xp.asarray(u)
    # summation order may differ between libraries: a few ulps of the sum. A square
    # below the smallest normal number may be flushed to zero (XLA on CPU does): at most
    # TINY lost per term, D terms per sample, B * D in the sum
    tol = 8 * EPS64 * v[0].size
    floor = TINY64 * v.size
    got = to_numpy(fs.cfm_loss(va, ua, reduction="none"))
    np.testing.assert_allclose(got, per, rtol=tol, atol=floor)
    np.testing.assert_allclose(
        float(to_numpy(fs.cfm_loss(va, ua))), per.mean(), rtol=tol, atol=floor
    )
    got = float(to_numpy(fs.cfm_loss(va, ua, "sum")))
    np.testing.assert_allclose(got, per.sum(), rtol=tol, atol=floor)


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

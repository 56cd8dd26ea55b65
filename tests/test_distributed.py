"""DaskMarginal on a real 2-process LocalCluster: equal to EmpiricalMarginal, data stay put."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import time_range
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_marginal import conditioning, naive

import flowspec as fs
from flowspec.conformance.properties import _times, _values

da = pytest.importorskip("dask.array", reason="flowspec.distributed needs dask")
distributed = pytest.importorskip("distributed", reason="the tests need dask.distributed")

from dask.core import flatten  # noqa: E402

from flowspec.distributed import DaskMarginal  # noqa: E402

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
QUANTITIES = ("log_prob", "denoise", "velocity", "score", "divergence")


@pytest.fixture(scope="module")
def client():
    """One LocalCluster of 2 worker processes (1 thread each) for the whole module."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_workers_import_this_flowspec(client):
    import flowspec

    where = client.run(lambda: __import__("flowspec").__file__)
    assert len(where) == 2
    assert set(where.values()) == {flowspec.__file__}


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 40),
    event=st.sampled_from([(1,), (3,), (2, 2)]),
    batch=st.integers(1, 4),
    chunk=st.integers(3, 17),
    weighted=st.booleans(),
    case=st.data(),
)
def test_every_quantity_equals_empirical_marginal_and_naive(
    client, schedule, n, event, batch, chunk, weighted, case
):
    # arrays through the conformance kit's strategies (entries in [-4, 4], the range of
    # the normals they replace), so shrinking shrinks the arrays
    draw = case.draw
    data = draw(_values((n, *event), -4.0, 4.0)) + draw(_values(event, -4.0, 4.0))
    weights = draw(_values((n,), 0.1, 1.0)) if weighted else None
    t = draw(_times(batch, *time_range(schedule)))
    x = draw(_values((batch, *event), -4.0, 4.0)) * 1.5
    path = fs.GaussianPath(schedule)
    dm = DaskMarginal(
        path,
        da.from_array(data, chunks=(chunk, *event)),
        None if weights is None else da.from_array(weights, chunks=chunk),
        block_size=3,
        split_every=2,
    )
    # the chunks along N survive flattening the event axes (one task per chunk)
    assert dm.num_chunks == -(-n // chunk)
    single = fs.EmpiricalMarginal(path, data, weights=weights, chunk_size=5)
    ref, a, s, y = naive(schedule, data, x, t, weights=weights)
    # both are the same reduction regrouped (chunks, blocks, tree): each carries the
    # absolute log-weight error of a few eps * k of the matrix-product form (the error
    # model of tests/test_marginal.py); the posterior mean inherits it times the data
    # span, velocity / score times their gains, the covariance trace times span^2.
    err = 64 * EPS64 * conditioning(x, a, s, y)
    span = 1.0 + np.max(np.abs(y))
    c = schedule(t)
    gain = {
        "log_prob": np.ones_like(a),
        "denoise": span * np.ones_like(a),
        "velocity": span * (np.abs(c.d_sigma / c.sigma) * a + np.abs(c.d_alpha)),
        "score": span * a / s**2,
        "divergence": 4 * span**2 * np.abs((c.d_alpha - a * c.d_sigma / c.sigma) * a / s**2),
    }
    outs = dm.evaluate(x, t)  # every quantity from one reduction
    for name in QUANTITIES:
        out = outs[name]
        assert isinstance(out, np.ndarray) and out.dtype == x.dtype, name
        assert out.shape == getattr(single, name)(x, t).shape, name
        flat = out.reshape(batch, -1)
        tol = (gain[name] * err)[:, None] + 8 * EPS64 * np.abs(ref[name].reshape(batch, -1))
        for other in (ref[name], getattr(single, name)(x, t)):
            assert np.all(np.abs(flat - other.reshape(batch, -1)) <= 2 * tol), name
    summary = dm.posterior_summary(x, t)
    one = single.posterior_summary(x, t)
    assert set(summary) == set(one) == {"max_weight", "top", "trace_cov", "log_normaliser"}
    w = single.posterior(x, t)
    rows = np.arange(batch)
    for s_ in (summary, one):
        assert np.all(np.abs(s_["max_weight"] - w.max(axis=1)) <= 2 * err)
        # the top point is a most probable one (up to the weights' error)
        assert np.all(np.abs(w[rows, s_["top"]] - w.max(axis=1)) <= 2 * err)
        assert np.all(np.abs(s_["log_normaliser"] - one["log_normaliser"]) <= 2 * err)
        # the trace of the covariance inherits the weights' error times span^2
        assert np.all(np.abs(s_["trace_cov"] - one["trace_cov"]) <= 4 * span**2 * err)
    post = dm.posterior(x, t).compute()
    assert np.all(np.abs(post - ref["posterior"]) <= 2 * err[:, None])


@pytest.mark.parametrize("t", [0.3, 0.5, 0.7, 0.9, 0.99])
def test_float32_with_the_cancellation_guard(client, t):
    # queries on top of data points near t = 1: the matrix-product form of the dominant
    # log-weight cancels catastrophically in float32; the guard recomputes it exactly
    rng = np.random.default_rng(int(t * 100))
    data = (rng.normal(size=(300, 8)) * 3 + 10).astype(np.float32)
    schedule = fs.CondOT(sigma_min=1e-3)
    c = schedule(np.float64(t))
    x64 = c.alpha * data[:6].astype(np.float64) + c.sigma * rng.normal(size=(6, 8))
    x = x64.astype(np.float32)
    path = fs.GaussianPath(schedule)
    dm = DaskMarginal(path, da.from_array(data, chunks=(64, 8)), split_every=3)
    single = fs.EmpiricalMarginal(path, data)
    ref, a, s, y = naive(schedule, data.astype(np.float64), x.astype(np.float64), t)
    err = 64 * EPS32 * conditioning(x.astype(np.float64), a, s, y)
    outs = dm.evaluate(x, t, ("denoise", "velocity", "divergence"))
    for name in ("denoise", "velocity"):
        out = outs[name].astype(np.float64)
        one = getattr(single, name)(x, t).astype(np.float64)
        scale = np.abs(ref[name]).max(axis=1)
        # the guard keeps the dominant point exact: both float32 results are within
        # the streamed error bound of the float64 oracle, and of each other
        bound = ((np.abs(c.d_sigma / c.sigma) * a + 1) * err * (1 + np.abs(y).max()))[:, None]
        bound = bound + 16 * EPS32 * scale[:, None]
        assert np.all(np.abs(out - ref[name]) <= bound), name
        assert np.all(np.abs(out - one) <= 2 * bound), name
    # one-hot posteriors: the covariance trace is exactly 0, the divergence d ds/s
    div = outs["divergence"]
    onehot = ref["posterior"].max(axis=1) == 1.0
    expected = 8 * (c.d_sigma / c.sigma)
    np.testing.assert_allclose(div[onehot], expected, rtol=8 * EPS32)


def test_top_point_of_duplicated_data_is_the_first_copy(client):
    rng = np.random.default_rng(5)
    data = rng.normal(size=(30, 3)).astype(np.float32)
    twice = np.concatenate([data, data])
    path = fs.GaussianPath(fs.CondOT(sigma_min=1e-4))
    t = np.float32(0.999)
    x = (0.999 * data[[3, 17, 29]] + 1e-4 * rng.normal(size=(3, 3))).astype(np.float32)
    dm = DaskMarginal(path, da.from_array(twice, chunks=(7, 3)), split_every=2)
    single = fs.EmpiricalMarginal(path, twice, chunk_size=5)
    # exact ties (the two copies have bit-identical exact log-weights): the smaller index
    for s_ in (dm.posterior_summary(x, t), single.posterior_summary(x, t)):
        np.testing.assert_array_equal(s_["top"], [3, 17, 29])


def test_data_never_travel_to_the_client(client):
    # the data are generated on the workers and persisted there; a query batch moves
    # only the queries and (B, D)-sized partial statistics
    n, d, batch, chunk = 40_000, 16, 32, 5_000
    data = da.random.default_rng(0).standard_normal((n, d), chunks=(chunk, d), dtype=np.float32)
    data = client.persist(data)
    distributed.wait(data)
    data_keys = {str(k) for k in flatten(data.__dask_keys__())}
    client.run(lambda dask_worker: dask_worker.transfer_outgoing_log.clear())
    x = np.random.default_rng(1).normal(size=(batch, d)).astype(np.float32)
    dm = DaskMarginal(fs.GaussianPath(fs.CondOT()), data)
    assert dm.num_chunks == n // chunk
    graph, _, _ = dm.statistics_graph(x, 0.5)
    future = client.compute(graph)
    st = future.result()
    assert st.y_hat.shape == (batch, d)
    logs = client.run(lambda dask_worker: list(dask_worker.transfer_outgoing_log))
    workers = set(client.scheduler_info()["workers"])
    # what left a worker for anyone but another worker (the scheduler / the client);
    # the scheduler may balance chunks between workers, that stays on the cluster
    out = [
        (k, v)
        for log in logs.values()
        for entry in log
        if entry["who"] not in workers
        for k, v in entry["keys"].items()
    ]
    assert out, "the statistics must reach the client"
    assert not [k for k, _ in out if str(k) in data_keys], out
    # only the finished (B, D)-sized statistics: a few (B, D + 2) arrays
    total = sum(v for _, v in out)
    assert total <= 8 * batch * (d + 2) * 8, out
    assert total < data.nbytes / 100


def test_validation():
    data = da.zeros((10, 2), chunks=5)
    path = fs.GaussianPath(fs.CondOT())
    with pytest.raises(TypeError, match="`path`"):
        DaskMarginal(fs.CondOT(), data)
    with pytest.raises(TypeError, match="`data`"):
        DaskMarginal(path, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="`data`"):
        DaskMarginal(path, da.zeros(10, chunks=5))
    with pytest.raises(TypeError, match="`data`"):
        DaskMarginal(path, da.zeros((10, 2), chunks=5, dtype=int))
    with pytest.raises(ValueError, match="`weights`"):
        DaskMarginal(path, data, -da.ones(10, chunks=5))
    with pytest.raises(ValueError, match="`weights`"):
        DaskMarginal(path, data, da.ones(9, chunks=5))
    with pytest.raises(TypeError, match="`weights`"):
        DaskMarginal(path, data, da.ones(10, chunks=5, dtype=np.float32))
    with pytest.raises(ValueError, match="`split_every`"):
        DaskMarginal(path, data, split_every=1)
    with pytest.raises(ValueError, match="`block_size`"):
        DaskMarginal(path, data, block_size=0)
    m = DaskMarginal(path, data)
    with pytest.raises(ValueError, match="`quantities`"):
        m.evaluate(np.zeros((3, 2)), 0.5, ("velocity", "speed"))
    with pytest.raises(TypeError, match="`x`"):
        m.velocity(np.zeros((3, 2), dtype=np.float32), 0.5)
    with pytest.raises(ValueError, match="`x`"):
        m.velocity(np.zeros((3, 3)), 0.5)
    with pytest.raises(ValueError, match="`t`"):
        m.velocity(np.zeros((3, 2)), 1.5)
    with pytest.raises(AttributeError):
        m.path = path


def test_import_flowspec_does_not_import_dask():
    import subprocess
    import sys

    code = "import flowspec, sys; print(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("use_cluster", [False, True], ids=["threads", "scheduler"])
def test_cli_marginal_writes_the_quantity(client, tmp_path, capsys, use_cluster):
    from flowspec import cli

    rng = np.random.default_rng(4)
    data = rng.normal(size=(700, 2, 2))
    x = rng.normal(size=(5, 2, 2))
    np.save(tmp_path / "data.npy", data)
    np.save(tmp_path / "q.npy", x)
    args = [
        "marginal",
        str(tmp_path / "data.npy"),
        "--path",
        "ve",
        "--sigma-min",
        "0.1",
        "--t",
        "0.6",
        "--queries",
        str(tmp_path / "q.npy"),
        "--out",
        str(tmp_path / "out.npy"),
        "--quantity",
        "denoise",
        "--chunk",
        "128",
    ]
    if use_cluster:
        args += ["--scheduler", client.scheduler.address]
    assert cli.main(args) == 0
    out = np.load(tmp_path / "out.npy")
    schedule = fs.VarianceExploding(sigma_min=0.1)
    ref, a, s, y = naive(schedule, data, x, np.full(5, 0.6))
    # the error model of test_every_quantity_equals_empirical_marginal_and_naive
    err = 64 * EPS64 * conditioning(x, a, s, y) * (1 + np.abs(y).max())
    assert out.shape == x.shape
    assert np.all(np.abs(out - ref["denoise"]).reshape(5, -1) <= err[:, None])
    assert "100%" in capsys.readouterr().err or use_cluster  # the local progress bar


def test_cli_marginal_rejects_sigma_min_for_other_paths(tmp_path):
    from flowspec import cli

    np.save(tmp_path / "d.npy", np.zeros((3, 1)))
    with pytest.raises(ValueError, match="--sigma-min"):
        cli.main(
            [
                "marginal",
                str(tmp_path / "d.npy"),
                "--path",
                "vp",
                "--sigma-min",
                "0.1",
                "--t",
                "0.5",
                "--queries",
                str(tmp_path / "d.npy"),
                "--out",
                str(tmp_path / "o.npy"),
            ]
        )


def test_cfm_loss_floor_on_dask_equals_the_single_process_floor(client):
    rng = np.random.default_rng(9)
    data = rng.normal(size=(300, 3)) * 2
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    dm = DaskMarginal(path, da.from_array(data, chunks=(64, 3)))
    single = fs.EmpiricalMarginal(path, data)
    index = np.sort(rng.integers(0, 300, size=64))
    x1 = da.from_array(data, chunks=(64, 3))[index].compute()  # B rows travel
    assert np.array_equal(x1, data[index])
    x0 = rng.standard_normal((64, 3))
    t = rng.uniform(0.0, 0.95, size=64)
    a = fs.cfm_loss_floor(dm, x0, x1, t)
    b = fs.cfm_loss_floor(single, x0, x1, t)
    # the same per-sample terms up to the two velocities' rounding: per coordinate at most
    # gain * 64 eps k each (the error model above), so |dv| <= dn = 2 sqrt(D) gain err and
    # | ||v - u||^2 - ||v' - u||^2 | <= 2 ||v - u|| dn + dn^2
    c = path.schedule(t)
    x_t = path.sample(x0, x1, t)
    _, a_t, s_t, y = naive(path.schedule, data, x_t, t)
    err = 64 * EPS64 * conditioning(x_t, a_t, s_t, y)
    gain = (1.0 + np.abs(y).max()) * (np.abs(c.d_sigma / c.sigma) * a_t + np.abs(c.d_alpha))
    dn = 2 * np.sqrt(3) * gain * err
    tol = 2 * np.sqrt(b.terms) * dn + dn**2 + 8 * EPS64 * b.terms
    assert np.all(np.abs(a.terms - b.terms) <= tol)
    assert abs(a.estimate - b.estimate) <= tol.mean()
    for name in ("stderr", "low", "high"):
        # a std of terms that moved by at most tol each; the interval ends follow
        assert abs(getattr(a, name) - getattr(b, name)) <= 4 * tol.max(), name
    assert a.low < a.estimate < a.high

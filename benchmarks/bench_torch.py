"""Benchmarks of the torch backend: ratios against hand-written torch and two peers.

(a) One CFM training step (sample t and noise, path, model, loss, backward) at
    x shapes (8, 2), (4096, 2) and (256, 3, 32, 32), float32, for

    - hand-written torch (the code of the peers' examples:
      ``x_t = t x1 + (1 - t) x0``, ``u = x1 - x0``, ``((v - u) ** 2).mean()``; its
      loss is the mean over all B x D entries, eq. 9's batch mean of squared norms
      divided by the constant D, computed with as many kernels),
    - hand-written torch, fused: the same math as flowspec (eq. 9's loss) with the
      kernels flowspec launches, through public torch (``mul`` then ``addcmul_`` for
      ``x_t``, ``mse_loss(reduction="sum") / B``): what flowspec's validation and
      dispatch cost over the same arithmetic,
    - flowspec: ``sample_time``, ``sample_noise``, ``sample_and_target``, ``cfm_loss``,
    - flow_matching: ``AffineProbPath(CondOTScheduler()).sample``,
    - torchcfm: ``ConditionalFlowMatcher(sigma=0).sample_location_and_conditional_flow``.

    The model is one learnable scale, ``v = w * x_t``, so that the step itself (and not
    a network) is measured; the backward pass runs through the loss and the model.

(b) 100 Euler steps (t from 0 to 1) of a 3-layer MLP 2 -> 256 -> 256 -> 2 (SiLU, time
    added to the first layer) at batch 4096, float32, under ``torch.no_grad()``, for a
    hand-written loop, ``flowspec`` ``euler``, flow_matching ``ODESolver(method="euler")``
    and ``torchdiffeq.odeint(method="euler")``.

All implementations run in this one process, interleaved round-robin (one timed block
of each per round, in a rotating order), after a warm-up. The table shows the median
time per call over the rounds and its ratio to the hand-written code; lower is better.

Run: ``python benchmarks/bench_torch.py [--threads 1] [--rounds 41] [--clock cpu] [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import flowspec as fs

fst = fs.backends.get("torch")


def _optional(name: str):
    try:
        return __import__(name)
    except ImportError:  # a peer that is not installed is reported, not faked
        return None


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}


def measure(
    impls: dict[str, Callable[[], object]], rounds: int, inner: int, clock: str, warmup: int
) -> dict[str, tuple[float, float]]:
    """Per implementation: median seconds per call and median per-round ratio to the first."""
    now = CLOCKS[clock]
    for fn in impls.values():  # warm-up (allocator, lazy init, first-call costs)
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in impls}
    names = list(impls)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = impls[name]
            start = now()
            for _ in range(inner):
                fn()
            times[name].append((now() - start) / inner)
    base = times[names[0]]
    return {
        name: (
            statistics.median(ts),
            statistics.median(a / b for a, b in zip(ts, base, strict=True)),
        )
        for name, ts in times.items()
    }


def report(title: str, results: dict[str, tuple[float, float]]) -> None:
    baseline = next(iter(results))
    print(f"\n{title}")
    print(f"| implementation | median time | ratio to {baseline} (median of rounds) |")
    print("|---|---:|---:|")
    for name, (sec, ratio) in results.items():
        unit = f"{sec * 1e6:.1f} us" if sec < 1e-3 else f"{sec * 1e3:.2f} ms"
        print(f"| {name} | {unit} | {ratio:.3f} |")


# ---------------------------------------------------------------------------------------
# (a) training step
# ---------------------------------------------------------------------------------------
def training_step_impls(shape: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    x1 = torch.randn(shape)
    batch = shape[0]
    view = (batch,) + (1,) * (len(shape) - 1)
    w = torch.nn.Parameter(torch.ones(()))

    def model(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * w

    def hand() -> None:
        t = torch.rand(batch)
        x0 = torch.randn_like(x1)
        tt = t.view(view)
        x_t = tt * x1 + (1 - tt) * x0
        u = x1 - x0
        loss = ((model(t, x_t) - u) ** 2).mean()
        w.grad = None
        loss.backward()

    def hand_fused() -> None:
        # the same math with the kernels flowspec launches, through public torch:
        # x_t in one buffer (mul, then addcmul_ in place), the loss of eq. 9 (squared
        # norm per sample, batch mean) as mse_loss's sum over B
        t = torch.rand(batch)
        x0 = torch.randn_like(x1)
        tt = t.view(view)
        x_t = torch.mul(x1, tt).addcmul_(1 - tt, x0)
        u = x1 - x0
        loss = torch.nn.functional.mse_loss(model(t, x_t), u, reduction="sum") / batch
        w.grad = None
        loss.backward()

    path = fs.GaussianPath(fs.CondOT())

    def flowspec() -> None:
        t = fst.sample_time(batch)
        x0 = fst.sample_noise(x1)
        x_t, u = fst.sample_and_target(path, x0, x1, t)
        loss = fst.cfm_loss(model(t, x_t), u)
        w.grad = None
        loss.backward()

    impls = {"hand-written": hand, "hand-written, fused": hand_fused, "flowspec": flowspec}

    if _optional("flow_matching") is not None:
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler

        fm_path = AffineProbPath(scheduler=CondOTScheduler())

        def flow_matching() -> None:
            t = torch.rand(batch)
            x0 = torch.randn_like(x1)
            ps = fm_path.sample(x_0=x0, x_1=x1, t=t)
            loss = torch.pow(model(ps.t, ps.x_t) - ps.dx_t, 2).mean()
            w.grad = None
            loss.backward()

        impls["flow_matching"] = flow_matching
    else:
        print("flow_matching is not installed: skipped")

    if _optional("torchcfm") is not None:
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

        cfm = ConditionalFlowMatcher(sigma=0.0)

        def torchcfm() -> None:
            x0 = torch.randn_like(x1)
            t, x_t, u = cfm.sample_location_and_conditional_flow(x0, x1)
            loss = torch.mean((model(t, x_t) - u) ** 2)
            w.grad = None
            loss.backward()

        impls["torchcfm"] = torchcfm
    else:
        print("torchcfm is not installed: skipped")
    return impls


# ---------------------------------------------------------------------------------------
# (b) Euler sampling of an MLP
# ---------------------------------------------------------------------------------------
class MLP(torch.nn.Module):
    """2 -> 256 -> 256 -> 2 with SiLU; t (any shape broadcastable to (B, 1)) enters layer 1."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(2, width)
        self.time = torch.nn.Parameter(torch.randn(width) / width**0.5)
        self.l2 = torch.nn.Linear(width, width)
        self.l3 = torch.nn.Linear(width, 2)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(self.l1(x) + t.reshape(-1, 1) * self.time)
        h = torch.nn.functional.silu(self.l2(h))
        return self.l3(h)


def euler_impls(batch: int, steps: int) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    model = MLP().requires_grad_(False)
    x0 = torch.randn(batch, 2)
    h = 1.0 / steps

    def hand() -> torch.Tensor:
        with torch.no_grad():
            x = x0
            for k in range(steps):
                t = torch.full((batch,), k * h)
                x = x + h * model(t, x)
            return x

    def flowspec() -> torch.Tensor:
        with torch.no_grad():
            return fst.euler(model, x0, steps=steps)

    impls = {"hand-written": hand, "flowspec": flowspec}
    reference = hand()
    got = flowspec()
    assert torch.allclose(got, reference, rtol=1e-5, atol=1e-5), "flowspec euler disagrees"

    if _optional("flow_matching") is not None:
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper

        class Wrapped(ModelWrapper):
            def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
                return self.model(t, x)

        solver = ODESolver(velocity_model=Wrapped(model))
        grid = torch.tensor([0.0, 1.0])

        def flow_matching() -> torch.Tensor:
            return solver.sample(x_init=x0, step_size=h, method="euler", time_grid=grid)

        impls["flow_matching ODESolver"] = flow_matching
    else:
        print("flow_matching is not installed: skipped")

    if _optional("torchdiffeq") is not None:
        from torchdiffeq import odeint

        grid = torch.tensor([0.0, 1.0])

        def torchdiffeq() -> torch.Tensor:
            with torch.no_grad():
                return odeint(model, x0, grid, method="euler", options={"step_size": h})[-1]

        impls["torchdiffeq"] = torchdiffeq
    else:
        print("torchdiffeq is not installed: skipped")
    return impls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--rounds", type=int, default=41, help="timed rounds (training step)")
    parser.add_argument("--euler-rounds", type=int, default=7, help="timed rounds (Euler)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: CPU time of this thread (robust on a shared machine; with one torch "
        "thread all work runs on it); wall: perf_counter",
    )
    parser.add_argument("--quick", action="store_true", help="few rounds, for a smoke test")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else args.rounds
    euler_rounds = 1 if args.quick else args.euler_rounds
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, clock "
        f"{args.clock}, {rounds} rounds (Euler: {euler_rounds}), medians"
    )
    for shape, inner in (((8, 2), 200), ((4096, 2), 50), ((256, 3, 32, 32), 3)):
        results = measure(training_step_impls(shape), rounds, inner, args.clock, max(3, inner // 4))
        report(f"(a) training step, x shape {shape}", results)
    results = measure(euler_impls(4096, 100), euler_rounds, 1, args.clock, 1)
    report("(b) 100 Euler steps, MLP 2-256-256-2, batch 4096", results)


if __name__ == "__main__":
    main()

r"""``flowspec demo``: Flow Matching on a 2-D data set, end to end, in under a minute.

Trains a small MLP ``v_theta(t, x)`` with the CFM loss (paper eq. 9, reparameterised
as eq. 13) on samples of a 2-D density, then draws samples with the paper's Euler
rule from the source :math:`\mathcal N(0, \sigma_0^2 I)` at t = 0 to t = 1, and writes
one PNG with

* the data and the generated samples,
* a few Euler trajectories,
* snapshots of the conditional-path marginal :math:`p_t` (samples of
  :math:`\psi_t(x_0 \mid x_1) = \alpha_t x_1 + \sigma_t x_0` with :math:`x_1` from the
  data) next to the learned flow at the same times: Theorem 1 says the two agree,
* the training loss.

It uses PyTorch when it is installed, else JAX (``pip install 'flowspec[demo]'``);
either way the model is plain framework code and every Flow Matching step is a
flowspec core function called on framework arrays through the Array API:
:meth:`~flowspec.GaussianPath.sample_and_target`, :func:`~flowspec.cfm_loss`,
:func:`~flowspec.euler`.

Run ``flowspec demo --help`` for the options, or call :func:`main` / :func:`run`.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .losses import cfm_loss
from .ode import euler
from .paths import GaussianPath
from .schedules import (
    CondOT,
    Cosine,
    LinearVP,
    Polynomial,
    Schedule,
    VarianceExploding,
    VariancePreserving,
)

__all__ = ["DATASETS", "SCHEDULES", "DemoResult", "main", "run", "sample_data"]

#: Schedule name (as accepted by ``--schedule``, case-insensitive) -> the instance used.
#: VarianceExploding is scaled to the data (sigma_max = 8 for data of radius ~ 4; the
#: paper's 80 is for images in [-1, 1] at high resolution).
SCHEDULES: dict[str, Schedule] = {
    "CondOT": CondOT(sigma_min=1e-3),
    "VariancePreserving": VariancePreserving(),
    "VarianceExploding": VarianceExploding(sigma_min=0.01, sigma_max=8.0),
    "Cosine": Cosine(),
    "Polynomial": Polynomial(n=2.0),
    "LinearVP": LinearVP(),
}

#: Names of the 2-D data sets accepted by ``--data``.
DATASETS: tuple[str, ...] = ("checkerboard", "moons", "eight-gaussians")

# Times never reach a schedule's divergent endpoint during training: t ~ U[0, 1 - eps]
# with the paper's practice (App. E trains on [0, 1 - eps]); eps is larger than the
# paper's 1e-5 because the MLP here sees float32 targets that grow like 1/sqrt(1 - t).
_T_EPS = 1e-3


def sample_data(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples, shape (n, 2) float32, of the 2-D data set ``name``.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.demo import sample_data
    >>> sample_data("moons", 5, np.random.default_rng(0)).shape
    (5, 2)
    """
    if name == "checkerboard":
        # a 4 x 4 board on [-4, 4]^2 whose cells (c, r) with c + r even are filled
        col = rng.integers(0, 4, size=n)
        row = 2 * rng.integers(0, 2, size=n) + col % 2
        cells = np.stack([col, row], axis=1)
        out = -4.0 + 2.0 * cells + 2.0 * rng.uniform(size=(n, 2))
    elif name == "moons":
        k = rng.integers(0, 2, size=n)
        angle = rng.uniform(0.0, math.pi, size=n)
        cx = np.where(k == 0, np.cos(angle), 1.0 - np.cos(angle))
        cy = np.where(k == 0, np.sin(angle), 0.5 - np.sin(angle))
        out = 2.0 * (np.stack([cx - 0.5, cy - 0.25], axis=1) + 0.06 * rng.normal(size=(n, 2)))
    elif name == "eight-gaussians":
        angle = 2.0 * math.pi * rng.integers(0, 8, size=n) / 8.0
        centers = 3.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        out = centers + 0.3 * rng.normal(size=(n, 2))
    else:
        raise ValueError(f"`data` must be one of {DATASETS}, got {name!r}")
    return out.astype(np.float32)


def schedule_named(name: str) -> Schedule:
    """The schedule of :data:`SCHEDULES` called ``name`` (case-insensitive)."""
    for key, value in SCHEDULES.items():
        if key.lower() == str(name).lower():
            return value
    raise ValueError(f"`schedule` must be one of {tuple(SCHEDULES)}, got {name!r}")


# -- progress bar: tqdm if installed, else a tiny stderr fallback ------------------------
def _progress(iterable: Iterable[int], total: int, desc: str, enabled: bool) -> Iterator[int]:
    if not enabled:
        yield from iterable
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)
        return
    width = 30
    last = -1
    for i, item in enumerate(iterable):
        done = (i + 1) * width // total
        if done != last:
            last = done
            sys.stderr.write(f"\r{desc} [{'#' * done}{'.' * (width - done)}] {i + 1}/{total}")
            sys.stderr.flush()
        yield item
    sys.stderr.write("\n")


# -- the two trainers: plain framework code around flowspec core calls -------------------
_HIDDEN = 192
_FREQS = 8  # Fourier features of t


def _train_torch(path, data_fn, steps, batch, seed, lr, t_max, progress):
    torch = importlib.import_module("torch")  # the demo is not core: frameworks on demand

    torch.manual_seed(seed)
    freqs = torch.arange(1, _FREQS + 1, dtype=torch.float32) * math.pi

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(2 + 2 * _FREQS, _HIDDEN),
                torch.nn.SiLU(),
                torch.nn.Linear(_HIDDEN, _HIDDEN),
                torch.nn.SiLU(),
                torch.nn.Linear(_HIDDEN, _HIDDEN),
                torch.nn.SiLU(),
                torch.nn.Linear(_HIDDEN, 2),
            )

        def forward(self, t, x):  # the field signature of flowspec: t of shape (B,)
            ft = t[:, None] * freqs
            return self.net(torch.cat([x, torch.sin(ft), torch.cos(ft)], dim=1))

    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    losses = []
    for _ in progress(range(steps)):
        x1 = torch.from_numpy(data_fn(batch))
        x0 = torch.randn_like(x1)
        t = torch.rand(batch) * t_max
        x_t, u = path.sample_and_target(x0, x1, t)  # eq. 11 and 13 on torch tensors
        loss = cfm_loss(model(t, x_t), u)  # eq. 9
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay.step()
        losses.append(float(loss.detach()))
    model.eval()

    def field(t, x):
        with torch.no_grad():
            return model(t, x)

    def to_array(a: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))

    return field, to_array, losses


def _train_jax(path, data_fn, steps, batch, seed, lr, t_max, progress):
    jax = importlib.import_module("jax")
    jnp = importlib.import_module("jax.numpy")

    key = jax.random.PRNGKey(seed)
    sizes = [2 + 2 * _FREQS, _HIDDEN, _HIDDEN, _HIDDEN, 2]
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        key, sub = jax.random.split(key)
        bound = 1.0 / math.sqrt(fan_in)
        params.append(
            (jax.random.uniform(sub, (fan_in, fan_out), jnp.float32, -bound, bound),
             jnp.zeros(fan_out, dtype=jnp.float32))
        )  # fmt: skip
    freqs = jnp.arange(1, _FREQS + 1, dtype=jnp.float32) * math.pi

    def model(p, t, x):
        ft = t[:, None] * freqs
        h = jnp.concatenate([x, jnp.sin(ft), jnp.cos(ft)], axis=1)
        for w, b in p[:-1]:
            h = jax.nn.silu(h @ w + b)
        return h @ p[-1][0] + p[-1][1]

    def loss_fn(p, x0, x1, t):
        x_t, u = path.sample_and_target(x0, x1, t)  # eq. 11 and 13, traced by jax
        return cfm_loss(model(p, t, x_t), u)  # eq. 9

    b1, b2, adam_eps = 0.9, 0.999, 1e-8

    @jax.jit
    def update(p, m, v, i, x1, k):
        k0, k1 = jax.random.split(k)
        x0 = jax.random.normal(k0, x1.shape, dtype=x1.dtype)  # float32 even with x64 on
        t = jax.random.uniform(k1, (x1.shape[0],), dtype=x1.dtype) * t_max
        loss, g = jax.value_and_grad(loss_fn)(p, x0, x1, t)
        rate = lr * 0.5 * (1.0 + jnp.cos(math.pi * i / steps))
        m = jax.tree_util.tree_map(lambda a, b: b1 * a + (1 - b1) * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: b2 * a + (1 - b2) * b * b, v, g)
        c1, c2 = 1 - b1 ** (i + 1), 1 - b2 ** (i + 1)
        p = jax.tree_util.tree_map(
            lambda w, a, b: w - rate * (a / c1) / (jnp.sqrt(b / c2) + adam_eps), p, m, v
        )
        return p, m, v, loss

    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    losses = []
    for i in progress(range(steps)):
        key, sub = jax.random.split(key)
        params, m, v, loss = update(params, m, v, i, jnp.asarray(data_fn(batch)), sub)
        losses.append(loss)
    losses = [float(x) for x in jax.device_get(losses)]
    field = jax.jit(lambda t, x: model(params, t, x))
    return field, jnp.asarray, losses


def _backend(name: str) -> tuple[str, Callable[..., Any]]:
    import importlib.util

    order = ("torch", "jax") if name == "auto" else (name,)
    for candidate in order:
        if importlib.util.find_spec(candidate) is not None:
            return candidate, _train_torch if candidate == "torch" else _train_jax
    raise ImportError(
        "flowspec demo needs PyTorch or JAX (and matplotlib): pip install 'flowspec[demo]'"
        if name == "auto"
        else f"flowspec demo --backend {name} needs {name}, which is not installed"
    )


@dataclass
class DemoResult:
    """What :func:`run` computed (all NumPy), and where the figure went."""

    backend: str
    schedule: str
    data: np.ndarray  # (n, 2)
    samples: np.ndarray  # (n, 2), Euler from t=0 to t=1
    path: np.ndarray  # (sample_steps + 1, n, 2)
    losses: list[float]
    seconds: float
    out: str | None


def run(
    out: str | None = "flowspec-demo.png",
    steps: int = 3000,
    schedule: str = "CondOT",
    seed: int = 0,
    data: str = "checkerboard",
    backend: str = "auto",
    batch: int = 512,
    n_samples: int = 2000,
    sample_steps: int = 100,
    lr: float = 2e-2,
    progress: bool = True,
) -> DemoResult:
    """Train, sample and plot; return a :class:`DemoResult`. ``out=None`` skips the PNG."""
    for name, value, low in (
        ("steps", steps, 1),
        ("batch", batch, 1),
        ("n_samples", n_samples, 1),
        ("sample_steps", sample_steps, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
    if data not in DATASETS:
        raise ValueError(f"`data` must be one of {DATASETS}, got {data!r}")
    sched = schedule_named(schedule)
    sched_name = type(sched).__name__
    backend_name, trainer = _backend(backend)
    path = GaussianPath(sched)
    rng = np.random.default_rng(seed)
    t_max = 1.0 - _T_EPS if 1.0 in sched.divergent_at else 1.0

    start = time.perf_counter()
    field, to_array, losses = trainer(
        path,
        lambda n: sample_data(data, n, rng),
        steps,
        batch,
        seed,
        lr,
        t_max,
        lambda it: _progress(it, steps, f"training ({backend_name}, {sched_name})", progress),
    )
    # the source at t = 0 is N(alpha_0 x1, sigma_0^2 I); alpha_0 x1 is 0 for every
    # schedule but VP (alpha_0 ~ 6.6e-3) and VE (alpha = 1 but sigma_0 = sigma_max >> |x1|)
    sigma_0 = float(sched(0.0).sigma)
    x0 = to_array((sigma_0 * rng.standard_normal((n_samples, 2))).astype(np.float32))
    traj = euler(field, x0, steps=sample_steps, return_path=True)  # x_{k+1} = x_k + h v
    traj = np.asarray(traj)
    seconds = time.perf_counter() - start

    result = DemoResult(
        backend=backend_name,
        schedule=sched_name,
        data=sample_data(data, n_samples, rng),
        samples=traj[-1],
        path=traj,
        losses=losses,
        seconds=seconds,
        out=out,
    )
    if out is not None:
        _plot(result, path, rng, sample_steps)
    return result


def _plot(res: DemoResult, path: GaussianPath, rng: np.random.Generator, sample_steps: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = float(np.max(np.abs(res.data))) * 1.15
    data_color, model_color, path_color = "#4c72b0", "#dd8452", "#8c8c8c"
    fig = plt.figure(figsize=(15, 6.4), dpi=110)
    grid = fig.add_gridspec(2, 5, height_ratios=[1.25, 1.0], hspace=0.32, wspace=0.18)

    def square(ax, title):
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=10)

    ax = fig.add_subplot(grid[0, 0])
    ax.scatter(*res.data.T, s=1.5, c=data_color, alpha=0.6, linewidths=0)
    square(ax, "data $x_1 \\sim q$")

    ax = fig.add_subplot(grid[0, 1])
    ax.scatter(*res.samples.T, s=1.5, c=model_color, alpha=0.6, linewidths=0)
    square(ax, f"samples: Euler, {sample_steps} steps")

    ax = fig.add_subplot(grid[0, 2])
    ax.scatter(*res.data.T, s=1.0, c=data_color, alpha=0.15, linewidths=0)
    for i in range(24):
        xy = res.path[:, i, :]
        ax.plot(xy[:, 0], xy[:, 1], lw=0.8, c="#333333", alpha=0.8)
        ax.plot(*xy[0], "o", ms=2.5, c="#333333")
        ax.plot(*xy[-1], "o", ms=3.0, c=model_color)
    square(ax, "trajectories $t: 0 \\to 1$")

    ax = fig.add_subplot(grid[0, 3:])
    ax.plot(res.losses, lw=0.4, c=path_color, alpha=0.6, label="batch")
    window = max(1, len(res.losses) // 50)
    if len(res.losses) >= window:
        smooth = np.convolve(res.losses, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(res.losses)), smooth, c="#222222", lw=1.2, label="mean")
    low, high = np.quantile(res.losses, [0.005, 0.99])
    ax.set_ylim(0.9 * float(low), 1.1 * float(high))
    ax.set_xlabel("training step", fontsize=9)
    ax.set_title("CFM loss $\\|v_\\theta(t, x_t) - \\dot\\psi_t(x_0\\mid x_1)\\|^2$", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.tick_params(labelsize=8)

    # snapshots: the marginal path p_t (x_t = alpha_t x1 + sigma_t x0, x1 from the data)
    # against the learned flow's Euler state at the same time
    n = res.data.shape[0]
    sigma_0 = float(path.schedule(0.0).sigma)
    for col, frac in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
        k = round(frac * sample_steps)
        t = k / sample_steps
        x1 = res.data.astype(np.float64)
        x0 = rng.standard_normal(x1.shape)
        if t == 0.0:  # the source the sampler starts from
            x_t = sigma_0 * x0
        else:  # at t = 1 some schedules have d_sigma = -inf; sample() does not use it
            with np.errstate(divide="ignore"):
                x_t = path.sample(x0, x1, t)
        ax = fig.add_subplot(grid[1, col])
        ax.scatter(*x_t.T, s=1.0, c=path_color, alpha=0.45, linewidths=0)
        ax.scatter(*res.path[k].T, s=1.0, c=model_color, alpha=0.45, linewidths=0)
        square(ax, f"$t = {t:g}$")
        if col == 0:
            ax.set_ylabel(f"$p_t$ (grey) vs flow (orange), n={n}", fontsize=9)
    fig.suptitle(
        f"flowspec demo: Conditional Flow Matching, {res.schedule} path, "
        f"{len(res.losses)} training steps ({res.backend})",
        fontsize=12,
    )
    directory = os.path.dirname(os.path.abspath(res.out))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(res.out, bbox_inches="tight")
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``flowspec demo`` (shared by :func:`main` and the CLI)."""
    parser.add_argument("--out", default="flowspec-demo.png", help="PNG to write")
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument(
        "--schedule",
        default="CondOT",
        type=lambda s: type(schedule_named(s)).__name__,
        metavar="NAME",
        help=f"one of {', '.join(SCHEDULES)} (case-insensitive; default CondOT)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--data", default="checkerboard", choices=DATASETS)
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "jax"))
    parser.add_argument("--sample-steps", type=int, default=100, help="Euler steps")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_args(args: argparse.Namespace) -> int:
    try:
        res = run(
            out=args.out,
            steps=args.steps,
            schedule=args.schedule,
            seed=args.seed,
            data=args.data,
            backend=args.backend,
            sample_steps=args.sample_steps,
            progress=not args.no_progress,
        )
    except ImportError as exc:
        print(f"flowspec demo: {exc}", file=sys.stderr)
        return 2
    tail = res.losses[-max(1, len(res.losses) // 10) :]
    print(
        f"{res.schedule} path, {len(res.losses)} steps on {res.backend}: final loss "
        f"{np.mean(tail):.3f}, {res.seconds:.1f} s; wrote {res.out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flowspec demo`` with command-line arguments; returns the exit status."""
    parser = argparse.ArgumentParser(prog="flowspec demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return _run_args(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

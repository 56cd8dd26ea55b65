r"""``flowspec demo``: Flow Matching on a 2-D data set, end to end, in under a minute.

Trains a small MLP ``v_theta(t, x)`` with the CFM loss (paper eq. 9, in its
reparameterised form eq. 14) on a training set of 2-D points, draws samples with the
paper's Euler rule from the source :math:`\mathcal N(0, \sigma_0^2 I)` at t = 0 to
t = 1, and writes one PNG with

* the training set, the samples of the learned field, and the samples of the **exact
  marginal field** of the training set (eq. 8, :class:`~flowspec.EmpiricalMarginal`)
  from the same noise with the same Euler steps: the field that a perfect model learns;
* the training loss with the **CFM loss floor**, the constant of Theorem 2
  (:func:`~flowspec.cfm_loss_floor`): the loss of that perfect model, below which no
  model can go;
* snapshots of the marginal probability path :math:`p_t` (eq. 6; samples of
  :math:`\psi_t(x_0 \mid x_1) = \alpha_t x_1 + \sigma_t x_0` with :math:`x_1` from the
  training set) next to the learned flow at the same times, chosen for each schedule
  where its signal-to-noise ratio changes.

It uses PyTorch when it is installed, else JAX (``pip install ".[demo]"`` in a
checkout); either way the model is plain framework code and every Flow Matching step
is a flowspec core function called on framework arrays through the Array API:
:meth:`~flowspec.GaussianPath.sample_and_target`, :func:`~flowspec.cfm_loss`,
:func:`~flowspec.euler`. The framework computes with ``threads`` intra-op threads (1 by
default): the model is small, and more threads than free cores make a shared machine
many times slower.

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

from .losses import LossFloor, cfm_loss, cfm_loss_floor
from .marginal import EmpiricalMarginal
from .ode import euler
from .paths import GaussianPath
from .schedules import CATALOGUE, Schedule, VarianceExploding

__all__ = ["DATASETS", "SCHEDULES", "DemoResult", "main", "run", "sample_data", "snapshot_times"]

#: Schedule name (as accepted by ``--schedule``, case-insensitive) -> the instance used:
#: the first instance of each class in :data:`flowspec.schedules.CATALOGUE`, except
#: VarianceExploding, scaled to the data (sigma_max = 8 for data of radius ~ 4; the
#: paper's 80 is for images in [-1, 1] at high resolution).
SCHEDULES: dict[str, Schedule] = {}
for _schedule in CATALOGUE:
    SCHEDULES.setdefault(type(_schedule).__name__, _schedule)
SCHEDULES["VarianceExploding"] = VarianceExploding(sigma_min=0.01, sigma_max=8.0)

#: Names of the 2-D data sets accepted by ``--data``.
DATASETS: tuple[str, ...] = ("checkerboard", "moons", "eight-gaussians")

# Times never reach a schedule's divergent endpoint during training: t ~ U[0, 1 - eps]
# with the paper's practice (App. E.1 samples t in [0, 1 - eps] for the VP path); eps is
# larger than the paper's 1e-5 because the MLP here sees float32 targets that grow like
# 1/sqrt(1 - t).
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
_HIDDEN = 128
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
        x_t, u = path.sample_and_target(x0, x1, t)  # eq. 11, target of eq. 14
        loss = cfm_loss(model(t, x_t), u)  # eq. 14
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
        x_t, u = path.sample_and_target(x0, x1, t)  # eq. 11, target of eq. 14
        return cfm_loss(model(p, t, x_t), u)  # eq. 14

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
        'flowspec demo needs PyTorch or JAX (and matplotlib): pip install ".[demo]" in a checkout'
        if name == "auto"
        else f"flowspec demo --backend {name} needs {name}, which is not installed"
    )


def _set_threads(backend: str, threads: int) -> None:
    """Intra-op threads of the framework (PyTorch now; JAX/XLA if not yet started)."""
    if backend == "torch":
        torch = importlib.import_module("torch")
        torch.set_num_threads(threads)
    elif "jax" not in sys.modules:  # XLA reads its flags once, when it starts
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            extra = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
            extra += f"intra_op_parallelism_threads={threads}"
            os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()


def snapshot_times(schedule: Schedule, steps: int, n: int = 5) -> list[float]:
    r"""``n`` times on the Euler grid ``k / steps`` at which ``schedule`` changes evenly.

    The times split the range of :math:`r_t = \alpha_t / (\alpha_t + \sigma_t)`, the
    share of the data in :math:`x_t = \alpha_t x_1 + \sigma_t x_0`, into equal parts,
    from t = 0 to t = 1: evenly spaced for CondOT, late for VP (whose
    :math:`\alpha_t` stays near 0 until t is about 0.7).

    Examples
    --------
    >>> import flowspec as fs
    >>> from flowspec.demo import snapshot_times
    >>> snapshot_times(fs.CondOT(), 100)
    [0.0, 0.25, 0.5, 0.75, 1.0]
    >>> snapshot_times(fs.VariancePreserving(), 100)[1:4]
    [0.53, 0.74, 0.9]
    """
    grid = np.arange(steps + 1, dtype=np.float64) / steps
    with np.errstate(divide="ignore", invalid="ignore"):
        c = schedule(grid)
    alpha = np.broadcast_to(np.asarray(c.alpha, dtype=np.float64), grid.shape)
    sigma = np.broadcast_to(np.asarray(c.sigma, dtype=np.float64), grid.shape)
    share = alpha / (alpha + sigma)
    levels = np.linspace(share[0], share[-1], n)
    out = []
    for level in levels:
        k = int(np.argmin(np.abs(share - level)))
        out.append(k / steps)
    out[0], out[-1] = 0.0, 1.0
    return out


@dataclass
class DemoResult:
    """What :func:`run` computed (all NumPy), and where the figure went."""

    backend: str
    schedule: str
    data: np.ndarray  # (n_data, 2), the training set
    samples: np.ndarray  # (n_samples, 2), Euler from t=0 to t=1 with the learned field
    path: np.ndarray  # (sample_steps + 1, n_samples, 2), the learned flow's Euler states
    marginal_samples: np.ndarray  # (n_samples, 2), the same Euler run with the exact field
    floor: LossFloor  # the CFM loss floor of the training set (Theorem 2)
    losses: list[float]
    seconds: float
    threads: int
    out: str | None


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
    return value


def run(
    out: str | None = "flowspec-demo.png",
    steps: int = 2000,
    schedule: str = "CondOT",
    seed: int = 0,
    data: str = "checkerboard",
    backend: str = "auto",
    batch: int = 512,
    n_data: int = 2000,
    n_samples: int = 1000,
    sample_steps: int = 50,
    lr: float = 2e-2,
    threads: int = 1,
    progress: bool = True,
) -> DemoResult:
    """Train, sample and plot; return a :class:`DemoResult`. ``out=None`` skips the PNG.

    The model is trained on minibatches drawn from a fixed training set of ``n_data``
    points of the data set ``data``; the exact marginal field and the loss floor refer
    to that training set. ``threads`` sets the framework's intra-op threads.
    """
    for name, value in (
        ("steps", steps),
        ("batch", batch),
        ("n_data", n_data),
        ("n_samples", n_samples),
        ("sample_steps", sample_steps),
        ("threads", threads),
    ):
        _positive(name, value)
    if data not in DATASETS:
        raise ValueError(f"`data` must be one of {DATASETS}, got {data!r}")
    sched = schedule_named(schedule)
    sched_name = type(sched).__name__
    backend_name, trainer = _backend(backend)
    _set_threads(backend_name, threads)
    path = GaussianPath(sched)
    rng = np.random.default_rng(seed)
    t_max = 1.0 - _T_EPS if 1.0 in sched.divergent_at else 1.0
    train = sample_data(data, n_data, rng)  # the training set, float32

    start = time.perf_counter()
    field, to_array, losses = trainer(
        path,
        lambda n: train[rng.integers(0, n_data, size=n)],
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
    noise = sigma_0 * rng.standard_normal((n_samples, 2))
    traj = euler(field, to_array(noise.astype(np.float32)), steps=sample_steps, return_path=True)
    traj = np.asarray(traj)
    seconds = time.perf_counter() - start

    # the perfect model: the exact marginal field of the training set (float64 NumPy),
    # sampled from the same noise with the same Euler steps, and its CFM loss (the floor)
    marginal = EmpiricalMarginal(path, train.astype(np.float64))
    exact = euler(lambda t, x: marginal.velocity(x, t), noise, steps=sample_steps)
    m = 20 * batch
    floor = cfm_loss_floor(
        marginal,
        rng.standard_normal((m, 2)),
        train[rng.integers(0, n_data, size=m)].astype(np.float64),
        rng.uniform(0.0, t_max, size=m),  # the training distribution of t
    )

    result = DemoResult(
        backend=backend_name,
        schedule=sched_name,
        data=train,
        samples=traj[-1],
        path=traj,
        marginal_samples=exact,
        floor=floor,
        losses=losses,
        seconds=seconds,
        threads=threads,
        out=out,
    )
    if out is not None:
        _plot(result, path, rng, sample_steps)
    return result


DATA_COLOR, MODEL_COLOR, EXACT_COLOR = "#4c72b0", "#dd8452", "#55a868"


def _plot(res: DemoResult, path: GaussianPath, rng: np.random.Generator, sample_steps: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    lim = float(np.max(np.abs(res.data))) * 1.15
    fig = plt.figure(figsize=(11.0, 5.6), dpi=110)
    grid = fig.add_gridspec(2, 5, height_ratios=[1.0, 1.0], hspace=0.22, wspace=0.12)

    def square(ax, title):
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)

    def cloud(ax, xy, color, alpha=0.5):
        ax.scatter(*np.asarray(xy).T, s=0.8, c=color, alpha=alpha, linewidths=0)

    ax = fig.add_subplot(grid[0, 0])
    cloud(ax, res.data, DATA_COLOR)
    square(ax, f"training set ({res.data.shape[0]} points)")

    ax = fig.add_subplot(grid[0, 1])
    cloud(ax, res.samples, MODEL_COLOR)
    for i in range(12):  # a few Euler trajectories of the learned field
        xy = res.path[:, i, :]
        ax.plot(xy[:, 0], xy[:, 1], lw=0.5, c="#333333", alpha=0.6)
    square(ax, "learned field $v_\\theta$")

    ax = fig.add_subplot(grid[0, 2])
    cloud(ax, res.marginal_samples, EXACT_COLOR)
    square(ax, "exact marginal field $u_t$")

    ax = fig.add_subplot(grid[0, 3:])
    steps = np.arange(1, len(res.losses) + 1)
    ax.plot(steps, res.losses, lw=0.4, c=MODEL_COLOR, alpha=0.35, label="CFM loss of a batch")
    window = max(1, len(res.losses) // 50)
    if len(res.losses) >= window:
        smooth = np.convolve(res.losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, c=MODEL_COLOR, lw=1.4, label="running mean")
    floor, low, high = float(res.floor.estimate), float(res.floor.low), float(res.floor.high)
    ax.axhspan(low, high, color=EXACT_COLOR, alpha=0.25, lw=0)
    ax.axhline(floor, c=EXACT_COLOR, lw=1.4, ls="--", label=f"floor of Theorem 2: {floor:.3f}")
    top = max(float(np.quantile(res.losses, 0.995)), high)
    bottom = max(0.0, low - 0.6 * (top - low))  # room below the floor for the legend
    ax.set_ylim(bottom, top + 0.02 * (top - bottom))
    ax.set_xlim(1, len(res.losses))
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel("CFM loss (eq. 14)", fontsize=8)
    ax.yaxis.set_label_position("right")
    ax.yaxis.tick_right()
    ax.set_title("training loss and its floor (exact marginal field)", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.tick_params(labelsize=7)

    # snapshots: the marginal path p_t (x_t = alpha_t x1 + sigma_t x0, x1 from the
    # training set) against the learned flow's Euler state at the same time
    times = snapshot_times(path.schedule, sample_steps)
    sigma_0 = float(path.schedule(0.0).sigma)
    n = res.samples.shape[0]
    for col, t in enumerate(times):
        k = round(t * sample_steps)
        x1 = res.data[rng.integers(0, res.data.shape[0], size=n)].astype(np.float64)
        x0 = rng.standard_normal(x1.shape)
        if t == 0.0:  # the source the sampler starts from
            x_t = sigma_0 * x0
        else:  # at t = 1 some schedules have d_sigma = -inf; sample() does not use it
            with np.errstate(divide="ignore"):
                x_t = path.sample(x0, x1, t)
        ax = fig.add_subplot(grid[1, col])
        cloud(ax, x_t, DATA_COLOR, alpha=0.35)
        cloud(ax, res.path[k], MODEL_COLOR, alpha=0.35)
        square(ax, f"$t = {t:g}$")
    handles = [
        Line2D([], [], ls="", marker="o", ms=5, c=DATA_COLOR, label="data / path $p_t$ (eq. 6)"),
        Line2D([], [], ls="", marker="o", ms=5, c=MODEL_COLOR, label="learned flow (Euler)"),
        Line2D(
            [], [], ls="", marker="o", ms=5, c=EXACT_COLOR, label="exact marginal field (Euler)"
        ),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.02))  # fmt: skip
    fig.suptitle(
        f"flowspec demo: Conditional Flow Matching, {res.schedule} path, "
        f"{len(res.losses)} training steps ({res.backend})",
        fontsize=11,
    )
    directory = os.path.dirname(os.path.abspath(res.out))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(res.out, bbox_inches="tight")
    plt.close(fig)


def _int_at_least_1(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _schedule_arg(text: str) -> str:
    try:
        return type(schedule_named(text)).__name__
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(SCHEDULES)} (case-insensitive), got {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``flowspec demo`` (shared by :func:`main` and the CLI)."""
    parser.add_argument("--out", default="flowspec-demo.png", metavar="PATH", help="PNG to write")
    parser.add_argument(
        "--steps", type=_int_at_least_1, metavar="N", default=2000, help="training steps"
    )
    parser.add_argument(
        "--schedule",
        default="CondOT",
        type=_schedule_arg,
        metavar="{" + ",".join(SCHEDULES) + "}",
        help="the path's schedule (case-insensitive)",
    )
    parser.add_argument("--data", default="checkerboard", choices=DATASETS, help="2-D data set")
    parser.add_argument(
        "--backend", default="auto", choices=("auto", "torch", "jax"),
        help="framework of the model (auto: torch, else JAX)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, metavar="N", default=0, help="random seed")
    parser.add_argument(
        "--n-data",
        type=_int_at_least_1,
        metavar="N",
        default=2000,
        help="points in the training set",
    )
    parser.add_argument(
        "--sample-steps", type=_int_at_least_1, metavar="N", default=50, help="Euler steps"
    )
    parser.add_argument(
        "--threads", type=_int_at_least_1, metavar="N", default=1,
        help="intra-op threads of the framework (more than the free cores slows it down)",
    )  # fmt: skip
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
            n_data=args.n_data,
            sample_steps=args.sample_steps,
            threads=args.threads,
            progress=not args.no_progress,
        )
    except ImportError as exc:
        print(f"flowspec demo: {exc}", file=sys.stderr)
        return 2
    tail = res.losses[-max(1, len(res.losses) // 10) :]
    f = res.floor
    print(
        f"{res.schedule} path, {len(res.losses)} steps on {res.backend} "
        f"({res.threads} thread{'s' if res.threads > 1 else ''}): final loss "
        f"{np.mean(tail):.3f}, floor {float(f.estimate):.3f} "
        f"[{float(f.low):.3f}, {float(f.high):.3f}], {res.seconds:.1f} s; wrote {res.out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flowspec demo`` with command-line arguments; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="flowspec demo",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(parser)
    return _run_args(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

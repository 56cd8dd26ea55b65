r"""The conformance kit for discrete paths (Discrete Flow Matching, :mod:`flowspec.discrete`).

A discrete adapter has a ``name``, the kappa ``schedule`` it claims (a
:class:`flowspec.discrete.KappaSchedule`), its ``vocab_size`` and any subset of the
methods below. Arguments are NumPy arrays (token arrays int64, everything else
float64); results may be arrays of any library NumPy can read through DLPack.

=====================================  ==============================================
method                                 returns
=====================================  ==============================================
``coefficients(t)``                    ``(kappa, d_kappa)``, each (B,)
``sample(x0, x1, t)``                  a draw of x_t, (B, L) tokens (its own randomness)
``posterior_to_rate(probs, x, t)``     the marginal rate u^i(y, x), (B, L, V)
``loss(logits, x1, x, t)``             the generalised KL per sample (summed over the
                                       L tokens), (B,)
``euler(posterior, x0, steps)``        tokens at t = 1 after ``steps`` jump steps on
                                       t_k = k / steps; ``posterior(t, x)`` returns
                                       probabilities (B, L, V) for t (B,), x (B, L)
=====================================  ==============================================

=========================  ==========================================================
property id                what is checked
=========================  ==========================================================
``discrete.coefficients``  kappa and d_kappa against the claimed schedule on [0, 1]
``discrete.sample``        every token is x0 or x1; x0 at t = 0, x1 at t = 1; the
                           fraction of data tokens is kappa_t (binomial, 6 sigma)
``discrete.rate``          the rate against :func:`~flowspec.discrete.posterior_to_rate`
                           on [0, 1], t = 1 included (0 towards values of zero
                           posterior probability, +-inf elsewhere)
``discrete.loss``          against :func:`~flowspec.discrete.generalized_kl` on [0, 1]
                           (``inf`` at t = 1 for an inexact posterior, 0 for an exact one)
``discrete.euler.grid``    the posterior is evaluated exactly ``steps`` times, at
                           t_k = k / steps
``discrete.euler.law``     the law of the samples is as close to the data as the law of
                           the paper's jump step at the same h (exact, by enumeration),
                           up to the sampling error of the batch
=========================  ==========================================================
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..discrete import (
    EmpiricalMarginal,
    KappaSchedule,
    MixturePath,
    generalized_kl,
    jump_probabilities,
    posterior_to_rate,
)
from ..typing import Array
from .errors import Measure, compare
from .libraries import to_numpy
from .properties import AdapterRaised, Inputs, Property

__all__ = [
    "DISCRETE_CAPABILITIES",
    "DiscreteAdapter",
    "DiscreteReferenceAdapter",
    "discrete_properties",
    "is_discrete",
]

EPS = float(np.finfo(np.float64).eps)
#: Ulps allowed per term, as in the continuous kit.
ULPS = 64

#: Every optional method of the discrete protocol, in the order they are checked.
DISCRETE_CAPABILITIES = ("coefficients", "sample", "posterior_to_rate", "loss", "euler")


@runtime_checkable
class DiscreteAdapter(Protocol):
    """What the kit needs of a discrete implementation: name, schedule, vocabulary."""

    name: str
    schedule: KappaSchedule
    vocab_size: int


def is_discrete(adapter: Any) -> bool:
    """Whether ``adapter`` claims a kappa schedule (a discrete path)."""
    return isinstance(getattr(adapter, "schedule", None), KappaSchedule)


def validate_discrete(adapter: Any) -> None:
    """Raise TypeError unless ``adapter`` has a name, a kappa schedule and a vocabulary."""
    if not isinstance(getattr(adapter, "name", None), str):
        raise TypeError(f"`adapter` must have a string `name`, got {adapter!r}")
    v = getattr(adapter, "vocab_size", None)
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
        raise TypeError(f"`adapter.vocab_size` must be an integer >= 2, got {v!r}")


def discrete_capabilities(adapter: Any) -> list[str]:
    return [c for c in DISCRETE_CAPABILITIES if callable(getattr(adapter, c, None))]


def discrete_missing(adapter: Any) -> list[str]:
    have = set(discrete_capabilities(adapter))
    return [c for c in DISCRETE_CAPABILITIES if c not in have]


def _call(adapter: Any, method: str, *args: Any) -> Any:
    try:
        out = getattr(adapter, method)(*args)
    except Exception as exc:
        raise AdapterRaised(f"`{method}` raised {type(exc).__name__}: {exc}") from exc
    if method == "coefficients":
        return tuple(np.asarray(to_numpy(c), dtype=np.float64) for c in out)
    return to_numpy(out)


def _st() -> Any:
    from hypothesis import strategies as st

    return st


def _times(draw: Any, batch: int) -> np.ndarray:
    st = _st()
    near = [0.0, 1.0, 1.0 - EPS / 2, 1.0 - 1e-8, 1e-8, 0.5]
    elem = st.one_of(st.sampled_from(near), st.floats(0.0, 1.0, allow_subnormal=False))
    return np.array([draw(elem) for _ in range(batch)], dtype=np.float64)


def _same_infinities(got: np.ndarray, want: np.ndarray, what: str) -> str | None:
    """Where the reference is +-inf the implementation must give the same infinity."""
    inf = np.isinf(want)
    bad = inf & ~(got == want)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        return f"`{what}` at index {idx}: got {got[idx]!r}, reference {want[idx]!r}"
    return None


# -- properties ---------------------------------------------------------------------------


def _coefficients() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        t = inputs["t"]
        kappa, d_kappa = _call(adapter, "coefficients", t)
        c = adapter.schedule(t)
        worst = Measure(0.0, 0.0, 0.0)
        for got, want, what in ((kappa, c.kappa, "kappa"), (d_kappa, c.d_kappa, "d_kappa")):
            tol = ULPS * EPS * (1.0 + np.abs(want))
            m = compare(np.reshape(got, want.shape), want, tol, f"coefficients(t).{what}")
            if m.failure:
                return m
            worst = Measure(
                max(worst.abs_err, m.abs_err),
                max(worst.rel_err, m.rel_err),
                max(worst.ratio, m.ratio),
            )
        return worst

    def strategy(adapter: Any) -> Any:
        st = _st()

        @st.composite  # type: ignore[untyped-decorator]
        def inputs(draw: Any) -> Inputs:
            return {"t": _times(draw, draw(st.integers(1, 6)))}

        return inputs()

    def examples(adapter: Any) -> list[Inputs]:
        return [{"t": np.array([0.0, 0.25, 0.5, 1.0 - 1e-8, 1.0])}]

    return Property("discrete.coefficients", ("coefficients",), strategy, evaluate, examples)


def _sample() -> Property:
    rows, length = 2000, 4

    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        vocab = adapter.vocab_size
        rng = np.random.default_rng(inputs["seed"])
        x1 = rng.integers(0, vocab, (rows, length))
        x0 = (x1 + rng.integers(1, vocab, (rows, length))) % vocab  # x0 != x1 everywhere
        t = np.full(rows, inputs["t"])
        got = np.asarray(_call(adapter, "sample", x0, x1, t))
        if got.shape != x1.shape:
            return Measure(math.inf, math.inf, math.inf, f"`sample` returned shape {got.shape}")
        took = got == x1
        if np.any(~took & (got != x0)):
            idx = tuple(int(i) for i in np.argwhere(~took & (got != x0))[0])
            return Measure(
                math.inf,
                math.inf,
                math.inf,
                f"`sample` at index {idx}: token {got[idx]} is neither x0 nor x1",
            )
        kappa = float(adapter.schedule(inputs["t"]).kappa)
        frac = float(np.mean(took))
        n = took.size
        sigma = math.sqrt(kappa * (1.0 - kappa) / n)
        err = abs(frac - kappa)
        tol = 6.0 * sigma + 1.0 / n if 0.0 < kappa < 1.0 else 0.0
        m = Measure(
            err, err / max(kappa, 1e-300), err / tol if tol else (0.0 if err == 0 else math.inf)
        )
        if err > tol:
            m.failure = (
                f"`sample` at t = {inputs['t']!r}: fraction of data tokens {frac!r}, "
                f"kappa_t = {kappa!r} (tolerance {tol:.3g}, 6 binomial sigma)"
            )
        return m

    def strategy(adapter: Any) -> Any:
        st = _st()
        return st.fixed_dictionaries(
            {"t": st.floats(0.0, 1.0, allow_subnormal=False), "seed": st.integers(0, 2**31)}
        )

    def examples(adapter: Any) -> list[Inputs]:
        return [{"t": 0.0, "seed": 0}, {"t": 1.0, "seed": 1}, {"t": 0.5, "seed": 2}]

    return Property("discrete.sample", ("sample",), strategy, evaluate, examples)


def _posterior_inputs(adapter: Any, draw: Any) -> Inputs:
    st = _st()
    vocab = adapter.vocab_size
    batch, length = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(vocab), size=(batch, length))
    if draw(st.booleans()):  # exact zeros, and sometimes a point mass
        probs = np.where(rng.random(probs.shape) < 0.4, 0.0, probs)
        probs[..., 0] += 1e-3
        probs /= probs.sum(-1, keepdims=True)
    x = rng.integers(0, vocab, (batch, length))
    return {"probs": probs, "x": x, "t": _times(draw, batch)}


def _rate() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        probs, x, t = inputs["probs"], inputs["x"], inputs["t"]
        with np.errstate(all="ignore"):
            want = posterior_to_rate(adapter.schedule, x, t, probs=probs)
            jump = np.abs(adapter.schedule.jump(t))
        got = np.asarray(_call(adapter, "posterior_to_rate", probs, x, t), dtype=np.float64)
        if got.shape != want.shape:
            return Measure(
                math.inf,
                math.inf,
                math.inf,
                f"`posterior_to_rate` returned shape {got.shape}, expected {want.shape}",
            )
        why = _same_infinities(got, want, "posterior_to_rate")
        if why:
            return Measure(math.inf, math.inf, math.inf, why)
        # the jump coefficient times probabilities: a few ulps of c and of the V-term sum
        scale = np.where(np.isfinite(jump), jump, 0.0)[:, None, None]
        tol = ULPS * EPS * adapter.vocab_size * (1.0 + scale)
        return compare(got, want, tol, "posterior_to_rate")

    def strategy(adapter: Any) -> Any:
        st = _st()
        return st.composite(lambda draw: _posterior_inputs(adapter, draw))()

    def examples(adapter: Any) -> list[Inputs]:
        v = adapter.vocab_size
        point = np.zeros((2, 1, v))
        point[:, 0, 1] = 1.0
        return [{"probs": point, "x": np.array([[1], [0]]), "t": np.array([1.0, 0.5])}]

    return Property("discrete.rate", ("posterior_to_rate",), strategy, evaluate, examples)


def _loss() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        logits, x1, x, t = inputs["logits"], inputs["x1"], inputs["x"], inputs["t"]
        with np.errstate(all="ignore"):
            want = generalized_kl(adapter.schedule, x1, x, t, logits=logits, reduction="none")
            jump = np.abs(adapter.schedule.jump(t))
        got = np.asarray(_call(adapter, "loss", logits, x1, x, t), dtype=np.float64)
        if got.shape != want.shape:
            return Measure(
                math.inf,
                math.inf,
                math.inf,
                f"`loss` returned shape {got.shape}, expected {want.shape}",
            )
        why = _same_infinities(got, want, "loss")
        if why:
            return Measure(math.inf, math.inf, math.inf, why)
        # per token: c (|log p| + 1), |log p| <= 2 max|logit| + log V; ulps of each
        size = x1.shape[1] * (1.0 + 2 * np.max(np.abs(logits)) + math.log(adapter.vocab_size))
        tol = ULPS * EPS * size * (1.0 + np.where(np.isfinite(jump), jump, 0.0))
        return compare(got, want, tol, "loss")

    def strategy(adapter: Any) -> Any:
        st = _st()

        @st.composite  # type: ignore[untyped-decorator]
        def inputs(draw: Any) -> Inputs:
            vocab = adapter.vocab_size
            batch, length = draw(st.integers(1, 4)), draw(st.integers(1, 3))
            rng = np.random.default_rng(draw(st.integers(0, 2**31)))
            logits = draw(st.sampled_from([1.0, 8.0, 40.0])) * rng.standard_normal(
                (batch, length, vocab)
            )
            x1 = rng.integers(0, vocab, (batch, length))
            t = _times(draw, batch)
            mixed = np.where(
                rng.random((batch, length)) < 0.5, x1, rng.integers(0, vocab, x1.shape)
            )
            x = np.where((t == 1.0)[:, None], x1, mixed)  # on the path: x_1 = x1
            return {"logits": logits, "x1": x1, "x": x, "t": t}

        return inputs()

    def examples(adapter: Any) -> list[Inputs]:
        v = adapter.vocab_size
        exact = np.full((1, 2, v), -1e4)
        exact[0, 0, 0] = exact[0, 1, 1] = 0.0
        x1 = np.array([[0, 1]])
        return [
            {"logits": np.zeros((1, 2, v)), "x1": x1, "x": x1, "t": np.array([1.0])},
            {"logits": exact, "x1": x1, "x": x1, "t": np.array([1.0])},
            {"logits": exact, "x1": x1, "x": np.array([[0, 0]]), "t": np.array([0.5])},
        ]

    return Property("discrete.loss", ("loss",), strategy, evaluate, examples)


#: The small problem of the Euler properties: V = 3 tokens, L = 2, five sequences.
_DATA = np.array([[0, 1], [2, 2], [1, 0], [0, 0], [0, 1]])


class _Recorder:
    """The exact-marginal posterior of a small data set, recording the times it is asked."""

    def __init__(self, adapter: Any) -> None:
        vocab = adapter.vocab_size
        self.marginal = EmpiricalMarginal(
            MixturePath(adapter.schedule, vocab, mask_token=getattr(adapter, "mask_token", None)),
            _DATA % vocab,
        )
        self.times: list[float] = []

    def probs(self, t: np.ndarray, x: np.ndarray) -> Array:
        """The exact posterior; off the support of p_t (reachable by a jump step that
        moves several tokens at once) the point mass at x, so that the chain stays."""
        with np.errstate(invalid="ignore"):
            post = self.marginal.denoise(x, t)
        stay = np.eye(self.marginal.path.vocab_size)[x]
        off = ~np.all(np.isfinite(post), axis=(-2, -1))
        return np.where(off[:, None, None], stay, post)

    def __call__(self, t: Any, x: Any) -> Array:
        t = np.asarray(to_numpy(t), dtype=np.float64)
        x = np.asarray(to_numpy(x), dtype=np.int64)
        self.times.append(float(np.reshape(t, (-1,))[0]))
        return self.probs(np.broadcast_to(np.reshape(t, (-1,)), (x.shape[0],)).copy(), x)


def _source(adapter: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    mask = getattr(adapter, "mask_token", None)
    if mask is not None:
        return np.full(shape, mask, dtype=np.int64)
    return rng.integers(0, adapter.vocab_size, shape)


def _euler_grid() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        steps = inputs["steps"]
        rec = _Recorder(adapter)
        x0 = _source(adapter, (3, 2), np.random.default_rng(steps))
        _call(adapter, "euler", rec, x0, steps)
        want = [k / steps for k in range(steps)]
        if len(rec.times) != steps:
            return Measure(
                math.inf,
                math.inf,
                math.inf,
                f"`euler` with steps = {steps} evaluated the posterior {len(rec.times)} times "
                f"(expected {steps}), at t = {rec.times[-3:]} (last three)",
            )
        err = max(abs(a - b) for a, b in zip(rec.times, want, strict=True))
        # times may be carried in float32 (torch's default dtype): 4 float32 ulps of t <= 1
        tol = 4 * float(np.finfo(np.float32).eps)
        m = Measure(err, err, err / tol)
        if err > tol:
            m.failure = f"`euler` evaluated at t = {rec.times}, expected t_k = k / {steps}"
        return m

    def strategy(adapter: Any) -> Any:
        return _st().fixed_dictionaries({"steps": _st().integers(1, 64)})

    def examples(adapter: Any) -> list[Inputs]:
        return [{"steps": 49}, {"steps": 10}, {"steps": 1}]

    return Property("discrete.euler.grid", ("euler",), strategy, evaluate, examples)


def _states(vocab: int, length: int) -> np.ndarray:
    return np.array(list(itertools.product(range(vocab), repeat=length)))


def _euler_law() -> Property:
    batch = 4000

    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        steps = inputs["steps"]
        vocab = adapter.vocab_size
        rec = _Recorder(adapter)
        states = _states(vocab, 2)
        data = rec.marginal.data
        q = np.array([np.mean(np.all(data == s, axis=1)) for s in states])
        # the law of the paper's jump step at the same h, exactly
        with np.errstate(all="ignore"):
            law = np.exp(rec.marginal.log_prob(states, np.zeros(len(states))))
        h = 1.0 / steps
        for k in range(steps):
            tk = np.full(len(states), k * h)
            rate = posterior_to_rate(adapter.schedule, states, tk, probs=rec.probs(tk, states))
            probs = jump_probabilities(states, rate, h)
            kernel = probs[:, 0, :][:, states[:, 0]] * probs[:, 1, :][:, states[:, 1]]
            law = law @ kernel
        spec_tv = 0.5 * float(np.abs(law - q).sum())
        x0 = _source(adapter, (batch, 2), np.random.default_rng(inputs["seed"]))
        out = np.asarray(_call(adapter, "euler", rec, x0, steps)).astype(np.int64)
        codes = out[:, 0] * vocab + out[:, 1]
        emp = np.bincount(codes, minlength=vocab * vocab) / batch
        tv = 0.5 * float(np.abs(emp - q).sum())
        # sampling error of an empirical law of K cells: P(TV > e) <= 2^K exp(-2 B e^2)
        cells = vocab * vocab
        e = math.sqrt((cells * math.log(2.0) + math.log(1e6)) / (2 * batch))
        m = Measure(tv, tv, tv / (spec_tv + e))
        if tv > spec_tv + e:
            m.failure = (
                f"`euler` with steps = {steps}: total variation to the data {tv:.4f} > "
                f"{spec_tv:.4f} (the paper's jump step) + {e:.4f} (sampling error)"
            )
        return m

    def strategy(adapter: Any) -> Any:
        st = _st()
        return st.fixed_dictionaries(
            {"steps": st.sampled_from([4, 8, 16]), "seed": st.integers(0, 2**31)}
        )

    def examples(adapter: Any) -> list[Inputs]:
        return [{"steps": 8, "seed": 0}]

    return Property("discrete.euler.law", ("euler",), strategy, evaluate, examples)


def discrete_properties(adapter: Any) -> list[Property]:
    """The discrete properties that apply to ``adapter`` (those whose methods it has)."""
    caps = set(discrete_capabilities(adapter))
    every = [_coefficients(), _sample(), _rate(), _loss(), _euler_grid(), _euler_law()]
    return [p for p in every if set(p.needs) <= caps]


# -- flowspec itself as a discrete adapter ------------------------------------------------


class DiscreteReferenceAdapter:
    """flowspec.discrete on NumPy as an adapter (it must pass every property).

    ``sample`` and ``euler`` draw their uniforms from a NumPy generator seeded by
    ``seed``.
    """

    def __init__(
        self, schedule: KappaSchedule, vocab_size: int, mask_token: int | None = None, seed: int = 0
    ) -> None:
        self.schedule = schedule
        self.vocab_size = vocab_size
        self.mask_token = mask_token
        self.path = MixturePath(schedule, vocab_size, mask_token=mask_token)
        self.rng = np.random.default_rng(seed)
        self.name = f"flowspec.discrete {self.path!r}"

    def coefficients(self, t: np.ndarray) -> tuple[Array, Array]:
        c = self.schedule(t)
        return c.kappa, c.d_kappa

    def sample(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Array:
        return self.path.sample(x0, x1, t, self.rng.random(x1.shape))

    def posterior_to_rate(self, probs: np.ndarray, x: np.ndarray, t: np.ndarray) -> Array:
        return posterior_to_rate(self.schedule, x, t, probs=probs)

    def loss(self, logits: np.ndarray, x1: np.ndarray, x: np.ndarray, t: np.ndarray) -> Array:
        return generalized_kl(self.schedule, x1, x, t, logits=logits, reduction="none")

    def euler(self, posterior: Callable[[Any, Any], Any], x0: np.ndarray, steps: int) -> Array:
        from ..discrete import euler

        def rate(t: np.ndarray, x: np.ndarray) -> Array:
            return posterior_to_rate(self.schedule, x, t, probs=np.asarray(posterior(t, x)))

        u = self.rng.random((steps, *x0.shape))
        return euler(rate, x0, u, steps=steps)

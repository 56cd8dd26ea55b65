"""An independent float64 reference for Discrete Flow Matching on small state spaces.

Written from the definitions (Gat et al., 2024) with Python loops and the `math`
module, sharing no code with flowspec.discrete: every probability of every sequence
is enumerated.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def kappa(schedule, t):
    """(kappa, d_kappa) of a flowspec kappa schedule, from the textbook formulas.

    Only the schedule's class name and parameter are read (no flowspec code runs).
    """
    kind = type(schedule).__name__
    if kind == "Linear":
        return t, 1.0
    if kind == "Polynomial":
        n = schedule.n
        return t**n, n * t ** (n - 1)
    if kind == "Cosine":
        return 1.0 - math.cos(math.pi * t / 2), math.pi / 2 * math.sin(math.pi * t / 2)
    raise ValueError(f"no reference for {schedule!r}")


def complement(schedule, t):
    """1 - kappa_t without cancellation near t = 1 (the textbook forms, `math` module)."""
    kind = type(schedule).__name__
    if kind == "Linear":
        return 1.0 - t
    if kind == "Polynomial":
        return -math.expm1(schedule.n * math.log(t))
    if kind == "Cosine":
        return math.sin(math.pi * (1.0 - t) / 2.0)
    raise ValueError(f"no reference for {schedule!r}")


def source_probs(vocab, mask):
    if mask is None:
        return [1.0 / vocab] * vocab
    return [1.0 if v == mask else 0.0 for v in range(vocab)]


def states(vocab, length):
    return [tuple(s) for s in itertools.product(range(vocab), repeat=length)]


def conditional_prob(x, x1, k, p0):
    """p_t(x | x1) = prod_i (k [x_i = x1_i] + (1 - k) p0(x_i))."""
    out = 1.0
    for xi, x1i in zip(x, x1, strict=True):
        out *= k * (xi == x1i) + (1 - k) * p0[xi]
    return out


def marginal_prob(x, data, k, p0):
    return sum(conditional_prob(x, tuple(d), k, p0) for d in data) / len(data)


def denoiser(x, data, k, p0, vocab):
    """p_{1|t}(y | x) per token, (L, V), by Bayes over the data rows."""
    weights = [conditional_prob(x, tuple(d), k, p0) for d in data]
    total = sum(weights)
    out = np.zeros((len(x), vocab))
    for w, d in zip(weights, data, strict=True):
        for i, di in enumerate(d):
            out[i, di] += w / total
    return out


def rate_from_denoiser(x, post, k, dk):
    """u^i(y, x) = dk / (1 - k) (p(y) - [y = x_i]), (L, V)."""
    length, vocab = post.shape
    out = np.zeros((length, vocab))
    for i in range(length):
        for y in range(vocab):
            out[i, y] = dk / (1 - k) * (post[i, y] - (y == x[i]))
    return out


def generalized_kl_token(p, x, x1, c):
    """Generalised KL sum_{y != x} [u log(u / v) - u + v] between u = c delta_{x1}, v = c p."""
    total = 0.0
    for y in range(len(p)):
        if y == x:
            continue
        u = c if y == x1 else 0.0
        v = c * p[y]
        total += (u * math.log(u / v) if u > 0 else 0.0) - u + v
    return total

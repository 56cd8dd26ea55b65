"""Random points and tangent vectors of every manifold of flowspec.riemannian (NumPy float64)."""

from __future__ import annotations

import numpy as np

from flowspec.riemannian import SO3, Euclidean, FlatTorus, Hyperbolic, Sphere

MANIFOLDS = [Euclidean(3), Sphere(2), FlatTorus(2), Hyperbolic(2), SO3()]
IDS = [repr(m) for m in MANIFOLDS]


def draws(m, rng: np.random.Generator, batch: int) -> np.ndarray:
    kind, shape = m.source_draws
    size = (batch, *shape)
    return rng.standard_normal(size) if kind == "normal" else rng.random(size)


def points(m, rng: np.random.Generator, batch: int) -> np.ndarray:
    """Source samples (the wrapped normal keeps hyperbolic points within a few units of o)."""
    return m.source_sample(draws(m, rng, batch))


def tangent(m, x: np.ndarray, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    return m.proju(x, scale * rng.standard_normal(x.shape))

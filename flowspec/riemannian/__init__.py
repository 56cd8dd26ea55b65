r"""Riemannian Flow Matching (Chen and Lipman, "Flow Matching on General Geometries", ICLR 2024).

Manifolds with closed-form geodesics (:class:`Euclidean`, :class:`Sphere`,
:class:`FlatTorus`, :class:`Hyperbolic`, :class:`SO3`), the geodesic conditional path
:class:`GeodesicPath` with its target, x-form field and density, the Riemannian CFM
loss, and solvers that stay on the manifold. Pure Array API, like the core: the same
code runs on NumPy, array-api-strict, PyTorch and JAX arrays.
"""

from .kappa import check_kappa_schedule
from .manifolds import SO3, Euclidean, FlatTorus, Hyperbolic, Manifold, Sphere
from .paths import GeodesicPath, riemannian_cfm_loss
from .solvers import TABLEAUS, integrate, log_likelihood, solve

__all__ = [
    "SO3",
    "TABLEAUS",
    "Euclidean",
    "FlatTorus",
    "GeodesicPath",
    "Hyperbolic",
    "Manifold",
    "Sphere",
    "check_kappa_schedule",
    "integrate",
    "log_likelihood",
    "riemannian_cfm_loss",
    "solve",
]

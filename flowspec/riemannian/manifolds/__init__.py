"""The manifolds of ``flowspec.riemannian``, one module each."""

from .base import Manifold
from .euclidean import Euclidean
from .hyperbolic import Hyperbolic
from .rotations import SO3
from .sphere import Sphere
from .torus import FlatTorus

__all__ = ["SO3", "Euclidean", "FlatTorus", "Hyperbolic", "Manifold", "Sphere"]

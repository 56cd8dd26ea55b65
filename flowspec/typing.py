"""The type aliases of flowspec's public signatures.

Arrays are any Array API array (NumPy, array-api-strict, PyTorch, JAX, CuPy): the
standard has no static array type yet, so :data:`Array` is :data:`typing.Any`, named so
that a signature says what it takes.

Examples
--------
>>> import numpy as np
>>> from flowspec.typing import Array, Field
>>> def drift(t: Array, x: Array) -> Array:
...     return -x
>>> field: Field = drift
>>> field(np.zeros(1), np.ones((1, 2))).tolist()
[[-1.0, -1.0]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

__all__ = ["Array", "Field", "Namespace"]

#: An array of any Array API library.
Array: TypeAlias = Any
#: An Array API namespace (the module returned by ``array_namespace``).
Namespace: TypeAlias = Any
#: A velocity field ``field(t, x)``: t of shape (B,), x of shape (B, *event).
Field: TypeAlias = Callable[[Any, Any], Any]

r"""The fixed-step solvers as data: one Butcher tableau per method.

An explicit Runge-Kutta method with s stages advances :math:`\dot x = v(t, x)` by one
step h from (t, x) as

.. math::
    k_1 = v(t, x), \quad
    k_i = v\Big(t + c_i h,\; x + h \sum_{j<i} a_{ij} k_j\Big), \quad
    x' = x + h \sum_j b_j k_j .

Each tableau is stored in *factored* form: every row of :math:`a` and the row
:math:`b` is a common factor ``num/den`` times small weights, and every
:math:`c_i` is a fraction. A loop evaluates a row as

``x + (h * num / den) * (w_1 k_1 + w_2 k_2 + ...)``

summed left to right, skipping zero weights and multiplying only by weights other
than one. That is the arithmetic of the hand-written classical forms (``x + (h/6)(k1 +
2 k2 + 2 k3 + k4)``), so every loop that reads these tables (the core's
:func:`flowspec.integrate`, the torch and JAX backends, the CuPy kernels) rounds
exactly as the reference does.

Adding a method is one entry of :data:`TABLEAUS`; every loop then integrates with
it, and a name that is not in the table is a ValueError everywhere.

Examples
--------
>>> from flowspec.tableaus import TABLEAUS
>>> rk4 = TABLEAUS["rk4"]
>>> rk4.order, rk4.butcher()[2]
(4, (0.16666666666666666, 0.3333333333333333, 0.3333333333333333, 0.16666666666666666))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TABLEAUS", "Row", "Tableau", "fraction", "tableau", "weighted_sum"]


@dataclass(frozen=True)
class Row:
    """One row of a factored tableau: ``factor[0] / factor[1]`` times ``weights``.

    ``weights[j]`` multiplies :math:`k_{j+1}`; missing trailing weights are zero.
    """

    factor: tuple[int, int]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta method in factored form (see the module docstring).

    Parameters
    ----------
    order : int
        The order of accuracy.
    c : tuple of (int, int)
        The times :math:`c_2, \\dots, c_s` of the stages after the first, as fractions.
    a : tuple of Row
        The rows :math:`a_{2\\cdot}, \\dots, a_{s\\cdot}` of the Butcher matrix.
    b : Row
        The weights of the final combination.
    """

    order: int
    c: tuple[tuple[int, int], ...]
    a: tuple[Row, ...]
    b: Row

    def __post_init__(self) -> None:
        if len(self.c) != len(self.a):
            raise ValueError(f"`c` and `a` must have one entry per stage, got {self!r}")
        for i, row in enumerate(self.a):
            if len(row.weights) > i + 1:
                raise ValueError(f"row {i + 2} of `a` reaches past its stage (explicit methods)")
        if len(self.b.weights) > len(self.a) + 1:
            raise ValueError("`b` has more weights than the method has stages")

    @property
    def stages(self) -> int:
        """The number of field evaluations per step."""
        return len(self.a) + 1

    def butcher(self) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]]:
        """The plain Butcher tableau ``(c, a, b)`` as floats (c and a including stage 1)."""
        s = self.stages

        def expand(row: Row) -> tuple[float, ...]:
            w = tuple(row.weights) + (0.0,) * (s - len(row.weights))
            return tuple(row.factor[0] / row.factor[1] * wj for wj in w)

        c = (0.0, *(num / den for num, den in self.c))
        a = ((0.0,) * s, *(expand(r) for r in self.a))
        return c, a, expand(self.b)


#: Method name -> its tableau. The classical forms of each method (paper Sec. 6 samples
#: with "euler"; the others are the standard explicit schemes of orders 2 and 4).
TABLEAUS: dict[str, Tableau] = {
    # x' = x + h k1
    "euler": Tableau(order=1, c=(), a=(), b=Row((1, 1), (1.0,))),
    # explicit midpoint: x' = x + h v(t + h/2, x + (h/2) k1)
    "midpoint": Tableau(order=2, c=((1, 2),), a=(Row((1, 2), (1.0,)),), b=Row((1, 1), (0.0, 1.0))),
    # Heun (explicit trapezoid): x' = x + (h/2)(k1 + k2), k2 = v(t + h, x + h k1)
    "heun": Tableau(order=2, c=((1, 1),), a=(Row((1, 1), (1.0,)),), b=Row((1, 2), (1.0, 1.0))),
    # classical Runge-Kutta: x' = x + (h/6)(k1 + 2 k2 + 2 k3 + k4)
    "rk4": Tableau(
        order=4,
        c=((1, 2), (1, 2), (1, 1)),
        a=(Row((1, 2), (1.0,)), Row((1, 2), (0.0, 1.0)), Row((1, 1), (0.0, 0.0, 1.0))),
        b=Row((1, 6), (1.0, 2.0, 2.0, 1.0)),
    ),
}


def tableau(method: Any) -> Tableau:
    """The tableau of ``method``, or a ValueError that lists the known methods.

    Examples
    --------
    >>> from flowspec.tableaus import tableau
    >>> tableau("heun").order
    2
    >>> tableau("rk45")
    Traceback (most recent call last):
    ...
    ValueError: `method` must be one of ('euler', 'midpoint', 'heun', 'rk4'), got 'rk45'
    """
    if not isinstance(method, str) or method not in TABLEAUS:
        raise ValueError(f"`method` must be one of {tuple(TABLEAUS)}, got {method!r}")
    return TABLEAUS[method]


def fraction(h: Any, frac: tuple[int, int]) -> Any:
    """``h * num / den``: ``h`` itself for 1/1, ``h / den`` for 1/den (a float or an array).

    Examples
    --------
    >>> from flowspec.tableaus import fraction
    >>> fraction(0.3, (1, 6)) == 0.3 / 6.0, fraction(0.3, (1, 1))
    (True, 0.3)
    """
    num, den = frac
    if num == 1:
        return h if den == 1 else h / float(den)
    return h * float(num) / float(den)


def weighted_sum(weights: Sequence[float], ks: Sequence[Any]) -> Any:
    """``w_1 k_1 + w_2 k_2 + ...`` left to right; zero weights skipped, weight one not multiplied.

    Examples
    --------
    >>> from flowspec.tableaus import weighted_sum
    >>> weighted_sum((1.0, 2.0, 0.0), (1.0, 10.0, 100.0))
    21.0
    """
    total = None
    for w, k in zip(weights, ks, strict=False):
        if w == 0.0:
            continue
        term = k if w == 1.0 else w * k
        total = term if total is None else total + term
    if total is None:
        raise ValueError("a tableau row must have a non-zero weight")
    return total

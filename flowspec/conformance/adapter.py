"""The adapter protocol: how an implementation under test is presented to the kit.

An adapter is any object with a ``name``, the ``schedule`` of the contract it claims
to implement (a :class:`~flowspec.schedules.Schedule` instance, with its parameters),
and any subset of the optional methods below. Every method receives NumPy arrays
(float64, or float32 in the dtype property) and returns an array of any library that
NumPy can read through DLPack (or a CuPy array); the kit converts it back.

======================================  ==============================================
method                                  returns
======================================  ==============================================
``coefficients(t)``                     ``(alpha, sigma, d_alpha, d_sigma)``, each (B,)
``sample(x0, x1, t)``                   ``x_t = alpha x1 + sigma x0``, (B, *event)
``target(x0, x1, t)``                   ``d_alpha x1 + d_sigma x0``, (B, *event)
``velocity(x, x1, t)``                  ``u_t(x | x1)`` (Theorem 3), (B, *event)
``log_prob(x, x1, t)``                  ``log p_t(x | x1)``, (B,)
``loss(v, u)``                          the CFM loss, reduced by ``loss_reduction``
``euler(field, x0, steps)``             x at t = 1 after ``steps`` Euler steps from 0
``velocity_from_x1(x1, x, t)``          conversions between parameterisations
``velocity_from_x0(x0, x, t)``          (Lipman et al. 2024, Table 1); x is x_t
``x1_from_velocity(v, x, t)``
``x0_from_velocity(v, x, t)``
``x1_from_x0(x0, x, t)``
``x0_from_x1(x1, x, t)``
``snr_inverse(snr)``                    t with alpha_t / sigma_t = snr, (B,)
``change_schedule(field, x, r)``        the velocity of ``schedule``'s path at (r, x)
                                        from ``field``, a velocity field of the path of
                                        the adapter's ``source_schedule`` (Guide 4.8.2)
======================================  ==============================================

Coupled paths and couplings (:mod:`flowspec.coupled_paths`, :mod:`flowspec.couplings`):
an adapter that also has a ``noise`` attribute (the
:class:`~flowspec.coupled_paths.NoiseScale` it claims, e.g. ``ConstantNoise(0.1)``)
and/or a ``coupling`` attribute (``"independent"``, ``"exact"`` or ``"entropic"``, with
``coupling_reg`` for the entropic plan in the convention of
:func:`flowspec.couplings.sinkhorn`) is checked for these methods too:

======================================  ==============================================
method                                  returns
======================================  ==============================================
``coupled_sample(x0, x1, eps, t)``      ``alpha x1 + sigma x0 + gamma eps``
``coupled_target(x0, x1, eps, t)``      ``d_alpha x1 + d_sigma x0 + d_gamma eps``
``coupled_velocity(x, x0, x1, t)``      ``u_t(x | x0, x1)``, the x-form field
``plan(x0, x1)``                        the coupling's (B0, B1) plan, summing to 1
``pairs(x0, x1)``                       the paired batch ``(x0', x1')`` a training step uses
======================================  ==============================================

``t`` is always a NumPy array of shape (B,). ``field(t, x)`` given to ``euler`` takes
NumPy arrays (t of shape (B,) or a 0-d array, x of shape (B, *event)) and returns a
NumPy array; the adapter converts around it. ``loss_reduction`` (default ``"mean"``)
is ``"mean"``, ``"sum"`` or ``"none"`` as in :func:`flowspec.cfm_loss`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..schedules import Schedule
from .libraries import to_numpy

__all__ = [
    "CAPABILITIES",
    "CONVERSIONS",
    "COUPLED",
    "COUPLINGS",
    "Adapter",
    "LibraryAdapter",
    "ReferenceAdapter",
    "capabilities",
    "load_target",
    "missing",
    "to_numpy",
]

#: The conversion helpers of the protocol.
CONVERSIONS = (
    "velocity_from_x1",
    "velocity_from_x0",
    "x1_from_velocity",
    "x0_from_velocity",
    "x1_from_x0",
    "x0_from_x1",
)
#: The conversions' (source, target) kinds in :mod:`flowspec.parameterisations`.
CONVERSION_KINDS = {
    "velocity_from_x1": ("x1", "velocity"),
    "velocity_from_x0": ("x0", "velocity"),
    "x1_from_velocity": ("velocity", "x1"),
    "x0_from_velocity": ("velocity", "x0"),
    "x1_from_x0": ("x0", "x1"),
    "x0_from_x1": ("x1", "x0"),
}
#: The methods of a coupled path and of a coupling (checked, and reported missing, for
#: adapters with a ``noise`` or ``coupling`` attribute).
COUPLED = ("coupled_sample", "coupled_target", "coupled_velocity", "plan", "pairs")
#: The couplings an adapter may claim.
COUPLINGS = ("independent", "exact", "entropic")
#: Every optional method of the protocol, in the order they are checked.
CAPABILITIES = (
    "coefficients",
    "sample",
    "target",
    "velocity",
    "log_prob",
    "loss",
    "euler",
    *CONVERSIONS,
    "snr_inverse",
    "change_schedule",
)


@runtime_checkable
class Adapter(Protocol):
    """What the kit needs: a name and the schedule claimed; every method is optional."""

    name: str
    schedule: Schedule


def _discrete(adapter: Any) -> bool:
    """Whether ``adapter`` claims a kappa schedule (see :mod:`.discrete`)."""
    from ..discrete import KappaSchedule

    return isinstance(getattr(adapter, "schedule", None), KappaSchedule)


def _coupled(adapter: Any) -> bool:
    return hasattr(adapter, "noise") or hasattr(adapter, "coupling")


def capabilities(adapter: Any) -> list[str]:
    """The protocol methods ``adapter`` has."""
    if _discrete(adapter):  # a discrete path: the protocol of flowspec.conformance.discrete
        from .discrete import discrete_capabilities

        return discrete_capabilities(adapter)
    extra = COUPLED if _coupled(adapter) else ()
    return [c for c in (*CAPABILITIES, *extra) if callable(getattr(adapter, c, None))]


def missing(adapter: Any) -> list[str]:
    """The protocol methods ``adapter`` lacks (reported, not checked)."""
    if _discrete(adapter):
        from .discrete import discrete_missing

        return discrete_missing(adapter)
    have = set(capabilities(adapter))
    extra = COUPLED if _coupled(adapter) else ()
    return [c for c in (*CAPABILITIES, *extra) if c not in have]


def validate(adapter: Any) -> None:
    """Raise TypeError unless ``adapter`` has a name and a contract schedule."""
    if _discrete(adapter):
        from .discrete import validate_discrete

        return validate_discrete(adapter)
    if not isinstance(getattr(adapter, "name", None), str):
        raise TypeError(f"`adapter` must have a string `name`, got {adapter!r}")
    if not isinstance(getattr(adapter, "schedule", None), Schedule):
        raise TypeError(
            f"`adapter.schedule` must be a flowspec Schedule (the schedule the "
            f"implementation claims, e.g. fs.CondOT(sigma_min=0.0)), got "
            f"{getattr(adapter, 'schedule', None)!r}"
        )
    red = getattr(adapter, "loss_reduction", "mean")
    if red not in ("mean", "sum", "none"):
        raise ValueError(f"`adapter.loss_reduction` must be 'mean', 'sum' or 'none', got {red!r}")
    _validate_coupled(adapter)


def _validate_coupled(adapter: Any) -> None:
    from ..coupled_paths import NoiseScale

    if hasattr(adapter, "noise") and not isinstance(adapter.noise, NoiseScale):
        raise TypeError(
            f"`adapter.noise` must be a flowspec NoiseScale (e.g. ConstantNoise(0.1)), got "
            f"{adapter.noise!r}"
        )
    if not hasattr(adapter, "coupling"):
        return
    if adapter.coupling not in COUPLINGS:
        raise ValueError(f"`adapter.coupling` must be one of {COUPLINGS}, got {adapter.coupling!r}")
    if adapter.coupling == "entropic":
        reg = getattr(adapter, "coupling_reg", None)
        if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not reg > 0:
            raise ValueError(
                f"`adapter.coupling_reg` must be a number > 0 for an entropic coupling, got {reg!r}"
            )


# -- flowspec itself as an adapter ------------------------------------------------------


def _in_float64_mode(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a LibraryAdapter method with its library in float64 mode (JAX: x64 for the
    call only; the caller's configuration is left as it was)."""

    @functools.wraps(method)
    def run(self: LibraryAdapter, *args: Any, **kwargs: Any) -> Any:
        from .libraries import float64_mode

        with float64_mode(self.library):
            return method(self, *args, **kwargs)

    return run


class LibraryAdapter:
    """flowspec's own functions run on array library ``library`` (inputs converted in).

    This is what ``flowspec check numpy`` (torch, jax, ...) checks: the core's
    functions on that library's arrays, against the NumPy float64 reference. The
    conversions are :func:`flowspec.convert`; the schedule change is
    :func:`flowspec.change_schedule` from ``source_schedule`` (``CondOT()``, whose SNR
    range [0, inf] serves every schedule; ``Cosine()`` for ``CondOT()`` itself).
    """

    loss_reduction = "mean"

    def __init__(self, library: str, schedule: Schedule) -> None:
        from .libraries import LIBRARIES, namespace

        if library not in LIBRARIES:
            raise ValueError(f"`library` must be one of {tuple(LIBRARIES)}, got {library!r}")
        self.library = library
        self.xp = namespace(library)
        self.schedule = schedule
        self.name = f"flowspec[{library}] {schedule!r}"
        from ..paths import GaussianPath
        from ..schedules import CondOT, Cosine

        self.path = GaussianPath(schedule)
        self.source_schedule = Cosine() if schedule == CondOT() else CondOT()

    def _in(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a)

    @_in_float64_mode
    def coefficients(self, t: np.ndarray) -> tuple[Any, ...]:
        return tuple(self.schedule(self._in(t)))

    @_in_float64_mode
    def sample(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.sample(self._in(x0), self._in(x1), self._in(t))

    @_in_float64_mode
    def target(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.target(self._in(x0), self._in(x1), self._in(t))

    @_in_float64_mode
    def velocity(self, x: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.velocity(self._in(x), self._in(x1), self._in(t))

    @_in_float64_mode
    def log_prob(self, x: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self.path.log_prob(self._in(x), self._in(x1), self._in(t))

    @_in_float64_mode
    def loss(self, v: np.ndarray, u: np.ndarray) -> Any:
        from ..losses import cfm_loss

        return cfm_loss(self._in(v), self._in(u), reduction=self.loss_reduction)

    @_in_float64_mode
    def euler(self, field: Callable[[Any, Any], Any], x0: np.ndarray, steps: int) -> Any:
        from ..ode import euler

        xp = self.xp

        def wrapped(t: Any, x: Any) -> Any:
            return xp.asarray(field(to_numpy(t), to_numpy(x)))

        return euler(wrapped, self._in(x0), steps=steps)

    @_in_float64_mode
    def _convert(self, method: str, y: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        from ..parameterisations import convert

        source, target = CONVERSION_KINDS[method]
        return convert(
            self.schedule, self._in(y), self._in(x), self._in(t), source=source, target=target
        )

    def velocity_from_x1(self, x1: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self._convert("velocity_from_x1", x1, x, t)

    def velocity_from_x0(self, x0: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self._convert("velocity_from_x0", x0, x, t)

    def x1_from_velocity(self, v: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self._convert("x1_from_velocity", v, x, t)

    def x0_from_velocity(self, v: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self._convert("x0_from_velocity", v, x, t)

    def x1_from_x0(self, x0: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self._convert("x1_from_x0", x0, x, t)

    def x0_from_x1(self, x1: np.ndarray, x: np.ndarray, t: np.ndarray) -> Any:
        return self._convert("x0_from_x1", x1, x, t)

    @_in_float64_mode
    def snr_inverse(self, snr: np.ndarray) -> Any:
        return self.schedule.snr_inverse(self._in(snr))

    @_in_float64_mode
    def change_schedule(
        self, field: Callable[[Any, Any], Any], x: np.ndarray, r: np.ndarray
    ) -> Any:
        from ..schedule_change import change_schedule

        xp = self.xp

        def wrapped(t: Any, z: Any) -> Any:
            return xp.asarray(field(to_numpy(t), to_numpy(z)))

        changed = change_schedule(wrapped, self.source_schedule, self.schedule)
        return changed(self._in(r), self._in(x))


class ReferenceAdapter(LibraryAdapter):
    """The NumPy reference itself (must pass every property: a check of the kit)."""

    def __init__(self, schedule: Schedule) -> None:
        super().__init__("numpy", schedule)
        self.name = f"reference {schedule!r}"


# -- resolving a TARGET -----------------------------------------------------------------

#: Shipped peer adapters: name -> module under flowspec.conformance.peers.
PEERS = {"flow_matching": "flow_matching", "torchcfm": "torchcfm"}


def _instantiated(obj: Any, target: str) -> Any:
    """A class is instantiated (with no arguments); a factory function is called."""
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "schedule")):
        try:
            return obj()
        except TypeError as exc:
            raise TypeError(
                f"target {target!r}: {obj!r} must be an adapter, a list of adapters, or a "
                f"class or callable taking no arguments that returns either; calling it "
                f"failed: {exc}"
            ) from exc
    return obj


def _as_adapters(obj: Any, target: str) -> list[Any]:
    obj = _instantiated(obj, target)
    items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    items = [_instantiated(a, target) for a in items]
    for a in items:
        validate(a)
    if not items:
        raise ValueError(f"target {target!r} provides no adapters")
    return items


def load_target(target: str) -> list[Any]:
    """The adapters a TARGET names.

    ``target`` is an array library whose flowspec run is checked (``numpy``,
    ``array-api-strict``, ``torch``, ``jax``, ``cupy``: one adapter per schedule of the
    contract), a shipped peer (``flow_matching``, ``torchcfm``), or
    ``package.module:attr`` where ``attr`` is an adapter, a list of adapters, or a
    callable returning either.

    Raises
    ------
    ValueError
        An unknown name or a malformed ``module:attr``.
    ImportError
        The library or module is not installed.
    """
    from ..schedules import CATALOGUE
    from .library import LIBRARIES

    if target in LIBRARIES:
        return [LibraryAdapter(target, s) for s in CATALOGUE]
    if target in PEERS:
        module = importlib.import_module(f"flowspec.conformance.peers.{PEERS[target]}")
        return _as_adapters(module.adapters, target)
    if ":" in target:
        mod_name, _, attr = target.partition(":")
        if not mod_name or not attr:
            raise ValueError(f"`target` must look like package.module:attr, got {target!r}")
        module = importlib.import_module(mod_name)
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ValueError(
                    f"`target` {target!r}: module {mod_name!r} has no attribute {attr!r}"
                ) from None
        return _as_adapters(obj, target)
    raise ValueError(
        f"`target` must be an array library {tuple(LIBRARIES)}, a shipped adapter "
        f"{tuple(PEERS)} or package.module:attr, got {target!r}"
    )

r"""The PyTorch backend: autograd divergences, likelihoods and a fused training step.

The core already runs on torch tensors through the Array API. This module adds what
the standard cannot express, with the core's names and signatures (a path method
becomes a function taking the path first):

* :func:`divergence` of a field by ``torch.func`` (exact, any event shape) or by
  Hutchinson's estimator with Rademacher probes from an explicit ``torch.Generator``;
* :func:`continuity_residual` with every derivative by automatic differentiation;
* :func:`log_likelihood` by the instantaneous change of variables, with the
  divergence computed here (``divergence="exact"`` or ``"hutchinson"``), differentiable
  with respect to the field's parameters;
* :func:`sample_and_target`, :func:`sample`, :func:`target` and :func:`cfm_loss` with
  as few passes over memory as eager PyTorch allows, and :func:`euler` /
  :func:`integrate` loops; all but :func:`integrate` and :func:`log_likelihood` trace
  under ``torch.compile(fullgraph=True)`` and capture in CUDA graphs (no host
  synchronisation, no value-dependent branch). Those two validate their host time
  grid with NumPy, which the compiler does not trace: compile the field they call,
  not the call itself;
* random helpers :func:`sample_time`, :func:`sample_noise` and
  :func:`sample_rademacher` that take a ``torch.Generator`` and respect device and
  dtype.

The coefficients come from the core's schedules (``schedule.coefficients``), so no
schedule formula is written twice. Validation reads shapes, dtypes and devices only,
plus values that are already host Python numbers or NumPy arrays; tensor values are
never read.

Batch independence: the autograd divergences and the derivatives of
:func:`continuity_residual` differentiate the whole batch at once with a probe that is
the same for every sample (a one-hot direction, a vector of ones in time). They
equal the per-sample quantities when sample ``b`` of the output depends on sample
``b`` of the input only, as for every MLP, U-Net or path of this package; a field that
mixes samples (batch normalisation in training mode) breaks that assumption.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import array_api_compat.torch as _ns
import torch
from torch.func import jvp as _jvp
from torch.func import vjp as _vjp
from torch.func import vmap as _vmap

from .. import formulas, validation
from ..ode import METHODS
from ..paths import GaussianPath
from ..schedules import Coefficients
from ..tableaus import fraction, tableau, weighted_sum

__all__ = [
    "METHODS",
    "cfm_loss",
    "coefficients",
    "continuity_residual",
    "coupled_sample_and_target",
    "divergence",
    "entropic_pairs",
    "euler",
    "integrate",
    "log_likelihood",
    "log_prob",
    "marginal",
    "riemannian_divergence",
    "riemannian_log_likelihood",
    "riemannian_source",
    "sample",
    "sample_and_target",
    "sample_noise",
    "sample_rademacher",
    "sample_time",
    "score",
    "target",
    "velocity",
]

Tensor = torch.Tensor
Field = Callable[[Tensor, Tensor], Tensor]

_DIVERGENCES = ("exact", "hutchinson")
_REDUCTIONS = ("mean", "sum", "none")
_ONES = (1,) * 64  # the trailing sizes of a (B, 1, ..., 1) view (torch allows 64 axes)
# The ATen kernel under ``torch.nn.functional.mse_loss`` (2 = its "sum" reduction),
# called without that wrapper: the wrapper adds a broadcast, a size warning and a
# reduction-name lookup that cfm_loss has already done (same shapes, dtypes and
# devices), measured at about 4 us of a 100 us training step at batch 8 on one CPU
# thread (benchmarks/bench_torch.py). The public operator ``torch.ops.aten.mse_loss``
# is the same kernel behind a slower dispatch: it is used where the binding is absent.
_mse_loss = getattr(torch._C._nn, "mse_loss", None) or torch.ops.aten.mse_loss
_SUM = 2


# ---------------------------------------------------------------------------------------
# validation (shapes, dtypes, devices; host values only)
# ---------------------------------------------------------------------------------------
def _tensor(name: str, x: Any) -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {validation.describe(x)}")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must have a real floating dtype, got {validation.describe(x)}")
    if x.ndim < 1:
        raise ValueError(f"`{name}` must be batch-first with shape (B, *event), got a 0-d tensor")
    if x.shape[0] < 1:
        raise ValueError(
            f"`{name}` must hold at least one sample (B >= 1), got shape {tuple(x.shape)}"
        )
    return x


def _like(a_name: str, a: Tensor, b_name: str, b: Any, same_shape: bool = True) -> None:
    _tensor(b_name, b)
    if b.dtype != a.dtype:
        raise TypeError(
            f"`{b_name}` and `{a_name}` must share one floating dtype (no silent casts): "
            f"`{b_name}` is {b.dtype} but `{a_name}` is {a.dtype}"
        )
    if b.device != a.device:
        raise ValueError(
            f"`{b_name}` and `{a_name}` must be on one device: `{b_name}` is on {b.device} "
            f"but `{a_name}` is on {a.device}"
        )
    if same_shape and b.shape != a.shape:
        raise ValueError(
            f"`{a_name}` and `{b_name}` must have the same shape (B, *event): "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _time(t: Any, x: Tensor, name: str = "t", x_name: str = "x") -> Tensor:
    """``t`` as a (B, 1, ..., 1) tensor against ``x``: :func:`flowspec.validation.time_array`.

    A tensor time must be on ``x``'s device (the core's rule reads no device); a number
    becomes a tensor on ``x``'s device. Host numbers are checked to lie in [0, 1],
    tensor values are never read.
    """
    if isinstance(t, torch.Tensor):
        if t.device != x.device:
            raise ValueError(
                f"`{name}` must be on the device of `{x_name}` ({x.device}), got {t.device}"
            )
        if t.dtype == x.dtype and t.ndim == 1 and t.shape[0] == x.shape[0]:
            # the hot path (a (B,) time of x's floating dtype, as sample_time draws it):
            # every check of time_array has passed, and its reshape is this view (sizes
            # as arguments: a tuple argument costs torch a microsecond more to parse)
            return t.view(x.shape[0], *_ONES[: x.ndim - 1])
    elif not isinstance(t, numbers.Real) or isinstance(t, bool):
        raise TypeError(
            f"`{name}` must be a real number or a torch.Tensor, got {validation.describe(t)}"
        )
    return validation.time_array(_ns, t, x, name=name, x_name=x_name)


def _path(path: Any) -> GaussianPath:
    if not isinstance(path, GaussianPath):
        raise TypeError(
            f"`path` must be a flowspec GaussianPath (e.g. fs.GaussianPath(fs.CondOT())), "
            f"got {validation.describe(path)}"
        )
    return path


def _callable(name: str, fn: Any, signature: str) -> None:
    if not callable(fn):
        raise TypeError(f"`{name}` must be a callable {signature}, got {validation.describe(fn)}")


def _checked(name: str, out: Any, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A user callable's result must be a tensor of this shape and of ``like``'s dtype."""
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != like.dtype:
        raise TypeError(
            f"`{name}` must return a torch.Tensor of shape {shape} and dtype {like.dtype}, "
            f"got {validation.describe(out)}"
        )
    return out


# ---------------------------------------------------------------------------------------
# the training step
# ---------------------------------------------------------------------------------------
def coefficients(path: GaussianPath, t: Any, x: Tensor) -> Coefficients:
    r"""The schedule's ``(alpha, sigma, d_alpha, d_sigma)`` at ``t``, each of shape (B, 1, ..., 1).

    The core's formulas (``path.schedule.coefficients``) evaluated on the time
    reshaped against ``x``; useful to fuse a custom training target.

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> c = fst.coefficients(fs.GaussianPath(fs.CondOT()), 0.25, torch.zeros(2, 3))
    >>> c.sigma.shape, c.sigma.flatten().tolist()
    (torch.Size([2, 1]), [0.75, 0.75])
    """
    _path(path)
    _tensor("x", x)
    tt = _time(t, x)
    # no output aliases the caller's t (CondOT's alpha is the time itself, a view of t)
    return Coefficients(*(v.clone() if v is tt else v for v in path.schedule.arrays(_ns, tt)))


def _pair(a_name: str, a: Any, b_name: str, b: Any) -> None:
    """Two batch-first floating tensors of one shape, dtype and device, else the error.

    One expression accepts the valid pair (the training step's case, a few attribute
    reads); anything it rejects goes through :func:`_tensor` and :func:`_like`, which
    raise the precise message (or accept, so the fast test never decides alone).
    """
    if (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.dtype is b.dtype  # torch dtypes are singletons
        and a.is_floating_point()
        and a.shape == b.shape
        and a.ndim >= 1
        and a.shape[0] >= 1
        and a.device == b.device
    ):
        return
    _tensor(a_name, a)
    _like(a_name, a, b_name, b)


def _prepared(
    path: Any, x0: Any, x1: Any, t: Any, a_name: str = "x0", b_name: str = "x1"
) -> Coefficients:
    if not isinstance(path, GaussianPath):
        _path(path)
    if (
        isinstance(x0, torch.Tensor)
        and isinstance(x1, torch.Tensor)
        and isinstance(t, torch.Tensor)
    ):
        # the training step's case in one test: x0, x1 batch-first floating tensors of
        # one shape, dtype and device, t of shape (B,) and their dtype and device (as
        # sample_time draws it). Every check of _tensor, _like and _time, read once;
        # what it rejects goes through them, which raise the precise message or accept.
        dtype = x0.dtype
        shape = x0.shape
        if (
            len(shape) >= 1
            and shape[0] >= 1
            and x1.dtype is dtype  # torch dtypes are singletons
            and t.dtype is dtype
            and x0.is_floating_point()
            and x1.shape == shape
            and t.ndim == 1
            and t.shape[0] == shape[0]
        ):
            device = x0.device
            if x1.device == device and t.device == device:
                # time_array's reshape (sizes as arguments: a tuple costs torch more)
                tt = t.view(shape[0], *_ONES[: len(shape) - 1])
                return path.schedule.coefficients(_ns, tt)
    _tensor(a_name, x0)
    _like(a_name, x0, b_name, x1)
    return path.schedule.coefficients(_ns, _time(t, x0, x_name=a_name))


def _combine(a: Tensor | float, x1: Tensor, b: Tensor | float, x0: Tensor) -> Tensor:
    # a * x1 + b * x0 with one output buffer: the product allocates it, addcmul_ adds
    # in place (autograd-safe: the product's backward keeps its inputs, not its output).
    # A coefficient constant in t is a Python float (e.g. CondOT's derivatives): it
    # rides as the `alpha` scalar of add, so `x1 - (1 - sigma_min) x0` is one kernel.
    if isinstance(b, float):
        if isinstance(a, float) and a == 1.0:
            # x1 + (-1) x0 is x1 - x0 exactly; sub skips add's alpha scaling pass
            return torch.sub(x1, x0) if b == -1.0 else torch.add(x1, x0, alpha=b)
        return torch.mul(x1, a).add_(x0, alpha=b)
    if isinstance(a, float):
        return torch.mul(x0, b).add_(x1, alpha=a)
    return torch.mul(x1, a).addcmul_(b, x0)


def sample(path: GaussianPath, x0: Tensor, x1: Tensor, t: Any) -> Tensor:
    r"""The conditional flow :math:`x_t = \alpha_t x_1 + \sigma_t x_0` (eq. 11), fused.

    Same contract as :meth:`flowspec.GaussianPath.sample`, for torch tensors.

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> fst.sample(fs.GaussianPath(fs.CondOT()), torch.zeros(1, 2), torch.ones(1, 2), 0.5).tolist()
    [[0.5, 0.5]]
    """
    c = _prepared(path, x0, x1, t)
    return _combine(c.alpha, x1, c.sigma, x0)


def target(path: GaussianPath, x0: Tensor, x1: Tensor, t: Any) -> Tensor:
    r"""The CFM target :math:`\dot\alpha_t x_1 + \dot\sigma_t x_0` (the target of eq. 14; eq. 23 for OT), fused.

    Same contract as :meth:`flowspec.GaussianPath.target`, for torch tensors.

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> fst.target(fs.GaussianPath(fs.CondOT()), torch.ones(1, 1), 3 * torch.ones(1, 1), 1.0).tolist()
    [[2.0]]
    """
    c = _prepared(path, x0, x1, t)
    return _combine(c.d_alpha, x1, c.d_sigma, x0)


def sample_and_target(path: GaussianPath, x0: Tensor, x1: Tensor, t: Any) -> tuple[Tensor, Tensor]:
    r"""``(x_t, target)`` of the CFM training step (eq. 9 reparameterised as eq. 14), fused.

    .. math:: x_t = \alpha_t x_1 + \sigma_t x_0, \qquad u = \dot\alpha_t x_1 + \dot\sigma_t x_0

    One schedule evaluation on the (B, 1, ..., 1) time, then two passes over the data
    per output (``mul`` into the output buffer, ``addcmul_`` in place): no other
    temporary of the data's size. It has no host synchronisation and no branch on
    tensor values, so it traces under ``torch.compile(fullgraph=True)`` and captures
    in a CUDA graph.

    Parameters
    ----------
    path : flowspec.GaussianPath
    x0 : torch.Tensor, shape (B, *event)
        Noise, x0 ~ N(0, I) (see :func:`sample_noise`).
    x1 : torch.Tensor, shape (B, *event)
        Data, same dtype and device as ``x0``.
    t : float or torch.Tensor, shape () or (B,) or (B, 1, ..., 1)
        Times (see :func:`sample_time`); host numbers must lie in [0, 1].

    Returns
    -------
    x_t, target : torch.Tensor, shape (B, *event)

    Raises
    ------
    TypeError
        A non-tensor or non-floating input, mismatched dtypes, a ``path`` that is not a
        :class:`~flowspec.GaussianPath`.
    ValueError
        Mismatched shapes or devices, a ``t`` of the wrong shape, host times outside [0, 1].

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> path = fs.GaussianPath(fs.CondOT())
    >>> x_t, u = fst.sample_and_target(path, torch.tensor([[1.0, -1.0]]), torch.tensor([[3.0, 5.0]]), 0.25)
    >>> x_t.tolist(), u.tolist()
    ([[1.5, 0.5]], [[2.0, 6.0]])
    """
    alpha, sigma, d_alpha, d_sigma = _prepared(path, x0, x1, t)
    return _combine(alpha, x1, sigma, x0), _combine(d_alpha, x1, d_sigma, x0)


def cfm_loss(v: Tensor, u: Tensor, reduction: Literal["mean", "sum", "none"] = "mean") -> Tensor:
    r"""The CFM loss :math:`\lVert v - u \rVert^2` per sample (eq. 9, 23), reduced over the batch.

    Same contract as :func:`flowspec.cfm_loss`: the squared norm over all event axes,
    then the batch mean (default), sum or nothing: the sum of squares in one fused kernel
    (``mse_loss`` with ``reduction="sum"``, then divided by B for the mean;
    ``torch.linalg.vecdot`` of the flattened difference per sample).

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> v = torch.tensor([[1.0, 2.0], [0.0, 0.0]]); u = torch.zeros(2, 2)
    >>> fst.cfm_loss(v, u, reduction="none").tolist(), float(fst.cfm_loss(v, u))
    ([5.0, 0.0], 2.5)
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
    _pair("v", v, "u", u)
    if reduction == "none":
        flat = (v - u).reshape(v.shape[0], -1)
        return torch.linalg.vecdot(flat, flat)
    if reduction == "mean" and v.dtype.itemsize < 4:
        # float16 / bfloat16: the sum over B x D entries may overflow where the mean does
        # not; per-sample norms, then torch's mean (accumulated in float32), as the core
        flat = (v - u).reshape(v.shape[0], -1)
        return torch.linalg.vecdot(flat, flat).mean()
    # one fused kernel for the sum of squares, and one for its backward (shapes are
    # checked above, so mse_loss never broadcasts)
    total = _mse_loss(v, u, _SUM)
    return total if reduction == "sum" else total / _batch_size(v.shape[0], v.dtype)


_BATCH_SIZES: dict[tuple[int, torch.dtype], Tensor] = {}


def _batch_size(batch: int, dtype: torch.dtype) -> Tensor:
    """B as a 0-d CPU tensor of ``dtype``, made once per (B, dtype).

    Dividing by it rounds exactly as dividing by the Python int (both are B in
    ``dtype``), without the scalar-to-tensor wrapping torch does on every call; a CPU
    0-d tensor is a scalar to kernels of any device, so nothing is copied to a device
    and a CUDA graph captures the value.
    """
    b = _BATCH_SIZES.get((batch, dtype))
    if b is None:
        if len(_BATCH_SIZES) >= 256:  # many batch sizes (a data set's ragged tail...)
            _BATCH_SIZES.clear()
        b = _BATCH_SIZES[(batch, dtype)] = torch.tensor(batch, dtype=dtype)
    return b


# ---------------------------------------------------------------------------------------
# random helpers
# ---------------------------------------------------------------------------------------
def _placement(
    generator: torch.Generator | None, dtype: Any, device: Any, like: Tensor | None = None
) -> tuple[Any, Any]:
    """The dtype and device of random samples; ``None`` leaves torch's defaults in place."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"`generator` must be a torch.Generator or None, got {validation.describe(generator)}"
        )
    if dtype is None and like is not None:
        dtype = like.dtype
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"`dtype` must be a floating torch.dtype, got {dtype!r}")
    if device is None:
        if like is not None:
            device = like.device
        elif generator is not None:
            device = generator.device
    if device is not None:
        device = torch.device(device)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"`generator` is on {generator.device} but the samples go to {device}; "
                f"use a generator of that device"
            )
    return dtype, device


def sample_time(
    batch: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: Any = None,
    low: float = 0.0,
    high: float = 1.0,
) -> Tensor:
    r"""Training times :math:`t \sim U[\text{low}, \text{high})`, shape (batch,).

    The paper samples t uniformly on [0, 1] (and on [0, 1 - 1e-5] for the VP path,
    App. E: pass ``high=1 - 1e-5``). ``dtype`` defaults to torch's default dtype,
    ``device`` to the generator's device (or torch's default device).

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> t = fst.sample_time(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> t.shape, t.dtype, bool(((t >= 0) & (t < 1)).all())
    (torch.Size([4]), torch.float64, True)
    """
    if (
        type(batch) is int
        and batch >= 1
        and generator is None
        and dtype is None
        and device is None
        and type(low) is float
        and type(high) is float
        and low == 0.0
        and high == 1.0
    ):  # the defaults, every check passed: the cheapest dispatch
        return torch.rand(batch)
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ValueError(f"`batch` must be an integer >= 1, got {validation.describe(batch)}")
    if low != 0.0 or high != 1.0 or type(low) is not float or type(high) is not float:
        low = validation.real_number("low", low)
        high = validation.real_number("high", high)
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(
            f"`low` and `high` must satisfy 0 <= low < high <= 1, got {low!r}, {high!r}"
        )
    dtype, device = _placement(generator, dtype, device)
    t = torch.rand(int(batch), **_given(generator=generator, dtype=dtype, device=device))
    if low == 0.0 and high == 1.0:
        return t
    # rounding to a short dtype can give `high` itself or a value below `low`: clip to
    # the dtype's values in [low, high) (a ValueError if there are none)
    lo, hi = validation.representable_interval(low, high, dtype, torch)
    return t.mul_(high - low).add_(low).clamp_(lo, hi)


def _given(**kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that are set: torch's factories dispatch faster without Nones."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _shape_of(name: str, shape_or_like: Any) -> tuple[tuple[int, ...], Tensor | None]:
    if isinstance(shape_or_like, torch.Tensor):
        return tuple(shape_or_like.shape), shape_or_like
    if isinstance(shape_or_like, numbers.Integral) and not isinstance(shape_or_like, bool):
        shape_or_like = (shape_or_like,)
    if isinstance(shape_or_like, (Sequence, torch.Size)) and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0
        for s in shape_or_like
    ):
        return tuple(int(s) for s in shape_or_like), None
    raise TypeError(
        f"`{name}` must be a shape (a sequence of non-negative ints) or a tensor, "
        f"got {validation.describe(shape_or_like)}"
    )


def sample_noise(
    shape_or_like: Any,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> Tensor:
    r"""Source samples :math:`x_0 \sim \mathcal N(0, I)` of a shape or shaped like a tensor.

    Given a tensor, the shape, dtype and device are taken from it (``dtype`` and
    ``device`` override them); ``torch.randn_like`` takes no generator, this does.

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> x1 = torch.zeros(3, 2, dtype=torch.float64)
    >>> x0 = fst.sample_noise(x1, generator=torch.Generator().manual_seed(0))
    >>> x0.shape, x0.dtype
    (torch.Size([3, 2]), torch.float64)
    """
    defaults = generator is None and dtype is None and device is None
    if defaults and isinstance(shape_or_like, torch.Tensor) and shape_or_like.is_floating_point():
        return torch.randn_like(shape_or_like)  # the cheapest dispatch, the same draw
    shape, like = _shape_of("shape_or_like", shape_or_like)
    dtype, device = _placement(generator, dtype, device, like)
    return torch.randn(shape, **_given(generator=generator, dtype=dtype, device=device))


def sample_rademacher(
    shape_or_like: Any,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> Tensor:
    r"""Rademacher probes: independent entries, +1 or -1 with probability 1/2 each.

    The probes of Hutchinson's trace estimator: :math:`\mathbb E[z z^\top] = I`.

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> z = fst.sample_rademacher((2, 3), generator=torch.Generator().manual_seed(0))
    >>> bool((z.abs() == 1).all())
    True
    """
    shape, like = _shape_of("shape_or_like", shape_or_like)
    dtype, device = _placement(generator, dtype, device, like)
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return bits.to(torch.get_default_dtype() if dtype is None else dtype).mul_(2.0).sub_(1.0)


# ---------------------------------------------------------------------------------------
# divergence, continuity, likelihood
# ---------------------------------------------------------------------------------------
def _batch_time(t: Any, x: Tensor) -> Tensor:
    return _time(t, x).reshape(x.shape[0])


def _exact_divergence(field: Field, tb: Tensor, x: Tensor, chunk_size: int | None) -> Tensor:
    batch, event = x.shape[0], tuple(x.shape[1:])
    d = math.prod(event)
    # Direction i is the one-hot e_i, the same for every sample: (J e_i)_i summed over
    # i is the trace of each sample's Jacobian (the batch-independence assumption).
    basis = torch.eye(d, dtype=x.dtype, device=x.device).reshape((d, 1, *event))

    def diagonal(e: Tensor) -> Tensor:
        e = e.expand(x.shape)
        _, tangent = _jvp(lambda y: field(tb, y), (x,), (e,))
        return (tangent * e).reshape(batch, d).sum(1)

    return _vmap(diagonal, chunk_size=chunk_size)(basis).sum(0)


def _hutchinson(
    field: Field, tb: Tensor, x: Tensor, probes: Tensor, chunk_size: int | None
) -> Tensor:
    batch = x.shape[0]

    def quadratic(z: Tensor) -> Tensor:
        _, tangent = _jvp(lambda y: field(tb, y), (x,), (z,))
        return (tangent * z).reshape(batch, -1).sum(1)

    return _vmap(quadratic, chunk_size=chunk_size)(probes).mean(0)


def _checked_field(field: Field, x: Tensor) -> Field:
    shape = tuple(x.shape)

    def checked(tt: Tensor, y: Tensor) -> Tensor:
        return _checked("field(t, x)", field(tt, y), shape, y)

    return checked


def divergence(
    field: Field | GaussianPath,
    t: Any,
    x: Tensor,
    *args: Any,
    method: Literal["exact", "hutchinson"] = "exact",
    n_probes: int = 1,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    r"""The divergence :math:`\nabla_x \cdot v_t(x) = \operatorname{tr} \partial_x v_t(x)` by autodiff.

    ``"exact"``: the trace of the Jacobian of each sample, from d forward-mode
    Jacobian-vector products vectorised with ``torch.func.vmap`` (d = number of event
    entries; any event shape). ``"hutchinson"``: Hutchinson's unbiased estimator
    :math:`\frac1n \sum_k z_k^\top \partial_x v\, z_k` with ``n_probes`` Rademacher
    probes drawn from ``generator`` (paper App. C; Grathwohl et al., 2019). The
    variance of one probe is :math:`\tfrac12 \sum_{i \ne j} (J_{ij} + J_{ji})^2`, zero
    when the Jacobian is diagonal.

    The result is differentiable with respect to the field's parameters (no
    ``torch.no_grad`` inside), so it can enter a training loss. Samples must be
    independent through ``field`` (see the module notes).

    With a :class:`~flowspec.GaussianPath` first, ``divergence(path, x, x1, t)`` is the
    closed form of :meth:`flowspec.GaussianPath.divergence` (the backend rule: path
    methods take the path first).

    Parameters
    ----------
    field : callable
        ``field(t, x)`` with t of shape (B,), returning a tensor of x's shape and dtype.
        It must be traceable by ``torch.func`` (forward-mode AD and vmap).
    t : float or torch.Tensor, shape () or (B,)
    x : torch.Tensor, shape (B, *event)
    method : {"exact", "hutchinson"}
    n_probes : int
        Number of Hutchinson probes (ignored by "exact").
    generator : torch.Generator, optional
        Source of the Hutchinson probes, on x's device.
    chunk_size : int, optional
        Directions (or probes) evaluated at once by vmap; lower it to bound memory.

    Returns
    -------
    torch.Tensor, shape (B,)

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> field = lambda t, x: -2.0 * x          # Jacobian -2 I, divergence -2 d
    >>> fst.divergence(field, 0.5, torch.ones(3, 4, 5)).tolist()
    [-40.0, -40.0, -40.0]
    """
    if isinstance(field, GaussianPath):
        if len(args) != 1:
            raise TypeError("`divergence(path, x, x1, t)` takes exactly x, x1 and t")
        x_, x1_, t_ = t, x, args[0]
        c = _prepared(field, x_, x1_, t_, "x", "x1")
        return formulas.divergence(c, x_, xp=_ns)
    if args:
        raise TypeError(f"`divergence(field, t, x)` got {len(args)} extra positional arguments")
    _callable("field", field, "field(t, x)")
    if method not in _DIVERGENCES:
        raise ValueError(f"`method` must be one of {_DIVERGENCES}, got {method!r}")
    if isinstance(n_probes, bool) or not isinstance(n_probes, numbers.Integral) or n_probes < 1:
        raise ValueError(f"`n_probes` must be an integer >= 1, got {validation.describe(n_probes)}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, numbers.Integral)
        or chunk_size < 1
    ):
        raise ValueError(
            f"`chunk_size` must be None or an integer >= 1, got {validation.describe(chunk_size)}"
        )
    _tensor("x", x)
    tb = _batch_time(t, x)
    checked = _checked_field(field, x)
    if method == "exact":
        return _exact_divergence(checked, tb, x, chunk_size)
    probes = sample_rademacher(
        (int(n_probes), *x.shape), generator=generator, dtype=x.dtype, device=x.device
    )
    return _hutchinson(checked, tb, x, probes, chunk_size)


def continuity_residual(
    log_prob: Callable[[Tensor, Tensor], Tensor],
    velocity: Field,
    t: Any,
    x: Tensor,
) -> Tensor:
    r"""The log-form continuity residual with every derivative by automatic differentiation.

    .. math:: r = \partial_t \log p_t(x) + \nabla\cdot u_t(x) + u_t(x)\cdot\nabla_x \log p_t(x)

    The same quantity as :func:`flowspec.continuity_residual` (paper eq. 26 divided by
    :math:`p_t`), but :math:`\partial_t \log p_t` is a forward-mode derivative in t,
    :math:`\nabla_x \log p_t` a reverse-mode gradient and the divergence the exact trace
    of :func:`divergence`: no step size, so the residual of a pair that satisfies the
    continuity equation is at the rounding level of its terms. It is an independent
    check that a density and a field agree (Theorem 1).

    Parameters
    ----------
    log_prob : callable
        ``log_prob(t, x) -> (B,)``, t of shape (B,); traceable by ``torch.func``.
    velocity : callable
        ``velocity(t, x) -> (B, *event)``.
    t : float or torch.Tensor, shape () or (B,)
        Times where ``log_prob`` is finite.
    x : torch.Tensor, shape (B, *event)

    Returns
    -------
    torch.Tensor, shape (B,)

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> path = fs.GaussianPath(fs.CondOT(sigma_min=0.01)); x1 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    >>> lp = lambda t, x: path.log_prob(x, x1, t); u = lambda t, x: path.velocity(x, x1, t)
    >>> r = fst.continuity_residual(lp, u, 0.5, torch.tensor([[0.3, 0.1]], dtype=torch.float64))
    >>> bool(r.abs().max() < 1e-12)
    True
    """
    _callable("log_prob", log_prob, "log_prob(t, x)")
    _callable("velocity", velocity, "velocity(t, x)")
    _tensor("x", x)
    batch = x.shape[0]
    tb = _batch_time(t, x)

    def lp_t(s: Tensor) -> Tensor:
        return _checked("log_prob(t, x)", log_prob(s, x), (batch,), x)

    def lp_x(y: Tensor) -> Tensor:
        return _checked("log_prob(t, x)", log_prob(tb, y), (batch,), x)

    _, dt_log_p = _jvp(lp_t, (tb,), (torch.ones_like(tb),))
    _, pullback = _vjp(lp_x, x)
    (grad_log_p,) = pullback(torch.ones_like(tb))
    checked = _checked_field(velocity, x)
    u = checked(tb, x)
    div = _exact_divergence(checked, tb, x, None)
    transport = (u * grad_log_p).reshape(batch, -1).sum(1)
    return dt_log_p + div + transport


# ---------------------------------------------------------------------------------------
# solvers
# ---------------------------------------------------------------------------------------
def _grid(time_grid: Any, x0: Tensor) -> list[Any]:
    """A host grid as validated Python floats, or a tensor grid as 0-d tensors (unread)."""
    if isinstance(time_grid, torch.Tensor):
        if not time_grid.is_floating_point() or time_grid.dtype != x0.dtype:
            raise TypeError(
                f"`time_grid` must share the floating dtype of `x0` ({x0.dtype}), got "
                f"{validation.describe(time_grid)}"
            )
        if time_grid.ndim != 1 or time_grid.shape[0] < 2:
            raise ValueError(
                f"`time_grid` must be 1-D with at least 2 times, got shape {tuple(time_grid.shape)}"
            )
        if time_grid.device != x0.device:
            raise ValueError(
                f"`time_grid` must be on the device of `x0` ({x0.device}), got {time_grid.device}"
            )
        return list(time_grid.unbind(0))
    grid = validation.host_grid("time_grid", time_grid)
    return [float(v) for v in grid]


def _times(t: Any, x: Tensor) -> Tensor:
    """A grid time (float or 0-d tensor) as the (B,) time argument of a field."""
    if isinstance(t, torch.Tensor):
        return t.reshape(1).expand(x.shape[0])
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


def _axpy(x: Tensor, h: Any, v: Tensor) -> Tensor:
    """x + h v in one kernel for a Python step, two for a tensor step."""
    if isinstance(h, torch.Tensor):
        return torch.addcmul(x, h, v)
    return torch.add(x, v, alpha=h)


def _rk_step(f: Callable[[Any, Any], Any], method: str, t: Any, h: Any, x: Any) -> Any:
    """One step of ``method``'s tableau on a tuple-of-tensors state; f(t, state) -> tuple.

    The core's :func:`flowspec.ode.step` with each row's update ``x + s * slope`` as one
    ``_axpy`` per component.
    """
    tab = tableau(method)

    def row(scale: Any, weights: tuple[float, ...], ks: list[Any]) -> Any:
        slopes = (weighted_sum(weights, parts) for parts in zip(*ks, strict=True))
        return tuple(_axpy(s, scale, k) for s, k in zip(x, slopes, strict=True))

    ks = [f(t, x)]
    for c, a in zip(tab.c, tab.a, strict=True):
        ks.append(f(t + fraction(h, c), row(fraction(h, a.factor), a.weights, ks)))
    return row(fraction(h, tab.b.factor), tab.b.weights, ks)


def _state_check(field: Any, x0: Any, method: str) -> None:
    _callable("field", field, "field(t, x)")
    tableau(method)
    _tensor("x0", x0)


def euler(
    field: Field,
    x0: Tensor,
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    return_path: bool = False,
) -> Tensor:
    r"""The paper's Euler sampler :math:`x_{k+1} = x_k + h\, v(t_k, x_k)`, one fused update per step.

    Same contract as :func:`flowspec.euler`: :math:`h = (t_1 - t_0)/\text{steps}`,
    :math:`t_k = t_0 + k h` computed from k. Each step costs the field call, one fill
    of the (B,) time and one ``torch.add(x, v, alpha=h)``. The loop is plain Python
    over host numbers, so ``torch.compile(fullgraph=True)`` unrolls it without graph
    breaks (compile time grows with ``steps``). Gradients flow unless you wrap the call
    in ``torch.no_grad()`` (do that for sampling).

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> fst.euler(lambda t, x: torch.ones_like(x), torch.zeros(2, 1), steps=4).tolist()
    [[1.0], [1.0]]
    """
    _state_check(field, x0, "euler")
    times, h = validation.euler_times(steps, t0, t1)
    shape = tuple(x0.shape)
    x = x0
    states = [x0]
    for t in times:
        v = _checked("field(t, x)", field(_times(t, x), x), shape, x0)
        x = torch.add(x, v, alpha=h)
        if return_path:
            states.append(x)
    return torch.stack(states, 0) if return_path else x


def integrate(
    field: Field,
    x0: Tensor,
    time_grid: Any,
    method: str = "euler",
    return_path: bool = False,
) -> Tensor:
    r"""Integrate :math:`\dot x = v(t, x)` over an explicit grid with a fixed-step method.

    Same contract as :func:`flowspec.integrate` (Euler, explicit midpoint, Heun and
    classical RK4 with the core's tableaus). A grid given as numbers or a NumPy array
    is validated on the host; a tensor grid is used as given, its values never read.

    Examples
    --------
    >>> import math, torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> grid = [k / 10 for k in range(11)]
    >>> x = fst.integrate(lambda t, x: -x, torch.ones(1, 1, dtype=torch.float64), grid, method="rk4")
    >>> round(float(x), 5), round(math.exp(-1.0), 5)
    (0.36788, 0.36788)
    """
    _state_check(field, x0, method)
    grid = _grid(time_grid, x0)
    shape = tuple(x0.shape)

    def f(t: Any, state: tuple[Tensor]) -> tuple[Tensor]:
        return (_checked("field(t, x)", field(_times(t, state[0]), state[0]), shape, x0),)

    x = (x0,)
    states = [x0]
    for k in range(len(grid) - 1):
        x = _rk_step(f, method, grid[k], grid[k + 1] - grid[k], x)
        if return_path:
            states.append(x[0])
    return torch.stack(states, 0) if return_path else x[0]


def log_likelihood(
    field: Field,
    x1: Tensor,
    log_p0: Callable[[Tensor], Tensor],
    time_grid: Any,
    method: str = "euler",
    divergence: Literal["exact", "hutchinson"] | Callable[[Tensor, Tensor], Tensor] = "exact",
    *,
    generator: torch.Generator | None = None,
    n_probes: int = 1,
) -> Tensor:
    r"""Log-likelihood of data under a flow, by the instantaneous change of variables.

    With :math:`x_t` the solution of :math:`\dot x = v_t(x)` through :math:`x_1`,
    :math:`\frac{d}{dt}\log p_t(x_t) = -\nabla\cdot v_t(x_t)`, so (paper App. C)

    .. math:: \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \nabla\cdot v_t(x_t)\, dt .

    The augmented state :math:`(x, f)` with :math:`\dot f = \nabla\cdot v_t(x)`,
    :math:`f = 0` at the first grid time, is integrated with ``method`` over
    ``time_grid`` (from 1 down to 0: data to noise), and the result is
    ``log_p0(x_end) + f_end``. The divergence is the exact trace (``"exact"``),
    Hutchinson's estimator (``"hutchinson"``: ``n_probes`` Rademacher probes drawn once
    per call from ``generator`` and held fixed along the trajectory, which keeps the
    estimate unbiased), or a callable ``divergence(t, x) -> (B,)`` as in the core.

    Nothing runs under ``torch.no_grad``: the result is differentiable with respect to
    the field's parameters and to ``x1``, so ``(-log_likelihood(...)).mean().backward()``
    trains by maximum likelihood. Wrap the call in ``torch.no_grad()`` for evaluation
    only (it then keeps no graph).

    Parameters
    ----------
    field : callable
        ``field(t, x)``, t of shape (B,).
    x1 : torch.Tensor, shape (B, *event)
        Data points.
    log_p0 : callable
        ``log_p0(x) -> (B,)``, the log-density of the source at the last grid time.
    time_grid : sequence of float, NumPy array or 1-D tensor
        Strictly decreasing times, e.g. ``numpy.linspace(1, 0, 101)``.
    method : {"euler", "midpoint", "heun", "rk4"}
    divergence : {"exact", "hutchinson"} or callable
    generator : torch.Generator, optional
        Source of the Hutchinson probes.
    n_probes : int
        Hutchinson probes per sample.

    Returns
    -------
    torch.Tensor, shape (B,)

    Examples
    --------
    The flow :math:`v_t(x) = x` maps N(0, I) at t = 0 to N(0, e^2 I) at t = 1:

    >>> import math, numpy as np, torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> x1 = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    >>> log_p0 = lambda x: -0.5 * (x * x).sum(1) - math.log(2 * math.pi)
    >>> ll = fst.log_likelihood(lambda t, x: x, x1, log_p0, np.linspace(1, 0, 41), method="rk4")
    >>> exact = -0.5 * float((x1 * x1).sum()) / math.e**2 - math.log(2 * math.pi * math.e**2)
    >>> abs(float(ll) - exact) < 1e-6
    True
    """
    _callable("field", field, "field(t, x)")
    tableau(method)
    _callable("log_p0", log_p0, "log_p0(x)")
    _tensor("x1", x1)
    if isinstance(n_probes, bool) or not isinstance(n_probes, numbers.Integral) or n_probes < 1:
        raise ValueError(f"`n_probes` must be an integer >= 1, got {validation.describe(n_probes)}")
    grid = _grid(time_grid, x1)
    if isinstance(grid[0], float):
        validation.check_data_to_noise("time_grid", grid[0], grid[-1], time_grid)
    batch = x1.shape[0]
    shape = tuple(x1.shape)
    checked = _checked_field(field, x1)
    if isinstance(divergence, str):
        if divergence not in _DIVERGENCES:
            raise ValueError(
                f"`divergence` must be one of {_DIVERGENCES} or a callable divergence(t, x), "
                f"got {divergence!r}"
            )
        if divergence == "exact":

            def div(tb: Tensor, x: Tensor) -> Tensor:
                return _exact_divergence(checked, tb, x, None)

        else:
            probes = sample_rademacher(
                (int(n_probes), *shape), generator=generator, dtype=x1.dtype, device=x1.device
            )

            def div(tb: Tensor, x: Tensor) -> Tensor:
                return _hutchinson(checked, tb, x, probes, None)

    elif callable(divergence):
        user = divergence

        def div(tb: Tensor, x: Tensor) -> Tensor:
            return _checked("divergence(t, x)", user(tb, x), (batch,), x)

    else:
        raise TypeError(
            f"`divergence` must be one of {_DIVERGENCES} or a callable divergence(t, x), "
            f"got {validation.describe(divergence)}"
        )

    def f(t: Any, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x = state[0]
        tb = _times(t, x)
        return checked(tb, x), div(tb, x)

    state = (x1, torch.zeros(batch, dtype=x1.dtype, device=x1.device))
    for k in range(len(grid) - 1):
        state = _rk_step(f, method, grid[k], grid[k + 1] - grid[k], state)
    x0, change = state
    return _checked("log_p0(x)", log_p0(x0), (batch,), x1) + change


# ---------------------------------------------------------------------------------------
# the rest of the backend contract: the core's formulas on validated tensors
# ---------------------------------------------------------------------------------------
def velocity(path: GaussianPath, x: Tensor, x1: Tensor, t: Any) -> Tensor:
    r""":meth:`flowspec.GaussianPath.velocity` on tensors, Theorem 3 (eq. 15).

    The core's formula (:func:`flowspec.formulas.velocity`) after this backend's
    validation (devices included).

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> fst.velocity(fs.GaussianPath(fs.CondOT()), torch.tensor([[0.5]]), torch.tensor([[2.0]]), 0.5).tolist()
    [[3.0]]
    """
    return formulas.velocity(_prepared(path, x, x1, t, "x", "x1"), x, x1)


def log_prob(path: GaussianPath, x: Tensor, x1: Tensor, t: Any) -> Tensor:
    r""":meth:`flowspec.GaussianPath.log_prob` on tensors (eq. 10), shape (B,).

    Examples
    --------
    >>> import math, torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> lp = fst.log_prob(fs.GaussianPath(fs.CondOT()), torch.zeros(1, 1), torch.zeros(1, 1), 0.0)
    >>> abs(float(lp) + 0.5 * math.log(2 * math.pi)) < 1e-6
    True
    """
    return formulas.log_prob(_prepared(path, x, x1, t, "x", "x1"), x, x1, xp=_ns)


def score(path: GaussianPath, x: Tensor, x1: Tensor, t: Any) -> Tensor:
    r""":meth:`flowspec.GaussianPath.score` on tensors: :math:`-(x - \alpha_t x_1)/\sigma_t^2` (eq. 10).

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> fst.score(fs.GaussianPath(fs.CondOT()), torch.tensor([[2.0]]), torch.zeros(1, 1), 0.0).tolist()
    [[-2.0]]
    """
    return formulas.score(_prepared(path, x, x1, t, "x", "x1"), x, x1)


# ---------------------------------------------------------------------------------------
# The exact marginal (eq. 6, 8) for torch (issue 16): the per-block partials, merge,
# exact band and read-out of flowspec.marginal (one definition), with each block's
# exponential done in place and kept off exp's subnormal path.
# ---------------------------------------------------------------------------------------
def _block_exp(z: Tensor) -> Tensor:
    # exp(z) in place on the temporary block (z <= 0, -inf inside the exact band). The
    # argument is clamped below at log(smallest normal) + 8: a weight that would
    # underflow towards the subnormals (where CPU exp runs an order of magnitude slower,
    # measured 13x on a (1024, 4096) float32 block) becomes e^8 times the smallest
    # normal number instead (3.5e-35 in float32): an absolute error per point far below
    # eps against the anchor's weight 1.
    floor = math.log(torch.finfo(z.dtype).tiny) + 8.0
    return z.clamp_min_(floor).exp_()


def _top_candidates(g: Tensor, floor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # the band's largest count K over the rows (one pass, one host sync), then each
    # row's top K streamed log-weights: the whole band of every row, in K columns
    # (torch.nonzero's variable-length rows cost a GEMM-sized pass more on CPU)
    count = (g >= floor[:, None]).sum(dim=1)
    width = max(1, int(count.max()))
    cols = torch.sort(torch.topk(g, width, dim=1, sorted=False).indices, dim=1).values
    return cols, torch.gather(g, 1, cols) >= floor[:, None], count > width


def _first(mask: Tensor, count: int) -> Tensor:
    # ``first(mask, k)`` of flowspec.marginal.grouped_select: the j-th True column of a
    # row is where its running count of Trues first reaches j, found by a binary search
    # of that count (one pass over the mask whatever k; k masked min-reductions would
    # be k passes), the mask's width where the row has fewer
    running = torch.cumsum(mask.to(torch.int32), dim=1)
    wanted = torch.arange(1, count + 1, dtype=torch.int32, device=mask.device)
    return torch.searchsorted(running, wanted.expand(mask.shape[0], count).contiguous())


def _compiled_block(
    p: Any,
    rows: Any,
    pts: Tensor,
    aug_t: Tensor,
    log_q: Tensor,
    start: Tensor,
    capacity: int,
    spill: int,
) -> tuple[Any, Tensor]:
    # one block of flowspec.marginal's reduction for torch.compile, merged into the
    # running partial p: the candidates at a fixed capacity (the core's grouped search:
    # no sort or top-k over the block), in whole-block expressions. The first `spill`
    # rows whose band overflowed it are done again at the top capacity (a few rows: a
    # small fraction of the block's cost); the rows still overflowing are left out of
    # the merge and flagged (see _exact_rows)
    from .. import marginal as mg

    blk = (pts, aug_t, log_q)
    select = mg.grouped_select(_ns, capacity, _first)
    part, overflow = mg.block_partial_capped(
        _ns, rows, *blk, select, offset=start, exp=_block_exp, fused=True
    )
    if spill:
        batch = overflow.shape[0]
        which = _first(overflow[None, :], spill)[0]  # (spill,), batch where fewer
        which = torch.where(which < batch, which, 0)
        sub = type(rows)(*(f[which] for f in rows))
        top = mg.grouped_select(_ns, _TIERS[-1], _first)
        again, still = mg.block_partial_capped(
            _ns, sub, *blk, top, offset=start, exp=_block_exp, fused=True
        )
        slot = torch.cumsum(overflow.to(torch.int32), dim=0) - 1  # each row's place in `which`
        slot = torch.where(overflow & (slot < spill), slot, spill)
        done = torch.cat([~still, torch.zeros_like(still[:1])])[slot]
        slot = torch.where(done, slot, 0)
        part = mg.where_rows(_ns, done, type(part)(*(f[slot] for f in again)), part)
        overflow = overflow & ~done
    part = mg.where_rows(_ns, overflow, mg.empty_partial(_ns, rows), part)
    return mg.merge_partials(_ns, rows, p, part), overflow


#: The compiled block and dynamo's config patch for it, made on first use.
_COMPILED: list[tuple[Callable[..., Any], Callable[[], Any]]] = []


def _compiled_run(*args: Any) -> tuple[Any, Tensor]:
    # one compilation per shape, dtype and capacity (up to 64 of them, not dynamo's
    # default 8, past which it would run the block uncompiled); dynamo's notes on
    # tracing through array-api-compat's cached type checks are silenced
    if not _COMPILED:
        import torch._dynamo.config as dynamo_config

        name = (
            "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
        )
        compiled = torch.compile(_compiled_block, dynamic=False, fullgraph=True)
        _COMPILED.append((compiled, lambda: dynamo_config.patch(**{name: 64})))
    compiled, limit = _COMPILED[0]
    with limit(), warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=".*lru_cache", category=UserWarning)
        return compiled(*args)


#: Capacities of the compiled kernel: a block starts at the one its predecessor ended
#: at, and moves to the next when some rows overflow it beyond the spill.
_TIERS = (4, 16, 64)


def _exact_rows(rows: Any, p: Any, overflow: Tensor, blk: tuple[Tensor, ...], start: int) -> Any:
    # the rows whose band overflowed the compiled kernel's capacity: their partial of
    # the block by the eager path (candidates sized to the widest band), merged in
    from .. import marginal as mg

    idx = torch.nonzero(overflow).reshape(-1)
    sub = type(rows)(*(f[idx] for f in rows))
    exact, over = mg.block_partial_capped(
        _ns, sub, *blk, _top_candidates, offset=start, exp=_block_exp
    )
    assert not bool(over.any())
    merged = mg.merge_partials(_ns, sub, type(p)(*(f[idx] for f in p)), exact)
    return type(p)(*(f.index_copy(0, idx, e) for f, e in zip(p, merged, strict=True)))


def marginal(
    path: GaussianPath,
    data: Tensor,
    x: Tensor,
    t: Any,
    quantity: str | tuple[str, ...] = "velocity",
    *,
    weights: Tensor | None = None,
    block_size: int | None = None,
    compiled: bool = False,
    band_capacity: int | None = None,
    tolerance: float | None = None,
) -> Tensor | tuple[Tensor, ...]:
    r"""One quantity of the exact marginal (eq. 6, 8) of ``data`` on one torch device.

    The reduction of :class:`flowspec.EmpiricalMarginal` itself (the block partials,
    exact band, merge and read-out of :mod:`flowspec.marginal`) on torch tensors, with
    each block's exponential done in place, its argument kept off ``exp``'s subnormal
    path; extra memory a few (B, ``block_size``) blocks (default ``max(1, 2**22 // B)``).
    Each row's exact band is taken from its top K streamed log-weights, K the widest
    band of the block's rows, so the cost grows where the posterior is diffuse (small
    t), as for :class:`flowspec.EmpiricalMarginal`.
    ``quantity`` is ``"velocity"`` (eq. 8), ``"denoise"``, ``"score"``, ``"log_prob"``
    (eq. 6), ``"divergence"``, or a tuple of these (one pass, a tuple of results).

    ``compiled=True`` runs each block through ``torch.compile`` (one compilation
    per shape, dtype and capacity, tens of seconds on a CPU; inference only: no input
    may require grad): the masked ``exp`` and the sums fused around the two matrix
    products, and each row's band found among a fixed number of candidates by a
    group-wise search instead of a top-k: ``band_capacity`` of them, or by default 4,
    then 16, then 64. Below 64, the first B // 64 rows of a block whose band overflows
    the capacity are done again at 64 inside the compiled block; the rows beyond those,
    or whose band holds more points, are recomputed by the eager path, and the next
    block moves up a capacity. The blocks
    are made even (at most ``block_size`` points each, the last padded with zero-weight
    points) so that one compilation per capacity serves them all. The answer is the
    same exact-band one; only the cost depends on how diffuse the posterior is.
    ``tolerance`` sets the band's width (see
    :func:`flowspec.marginal.check_tolerance`; default the unit roundoff: every weight
    as accurate as the dtype allows).

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> ft = fs.backends.get("torch")
    >>> path = fs.GaussianPath(fs.CondOT())
    >>> ft.marginal(path, torch.tensor([[-1.0], [1.0]]), torch.tensor([[0.0]]), 0.5, "denoise")
    tensor([[0.]])
    """
    from .. import marginal as mg

    path = _path(path)
    names = (quantity,) if isinstance(quantity, str) else quantity
    if not isinstance(names, tuple) or not names or any(q not in mg.QUANTITIES for q in names):
        raise ValueError(
            f"`quantity` must be one of {mg.QUANTITIES} or a tuple of them, got {quantity!r}"
        )
    data = _tensor("data", data)
    x = _tensor("x", x)
    _like("data", data, "x", x, same_shape=False)
    if x.ndim < 2 or data.ndim != x.ndim or data.shape[1:] != x.shape[1:] or data.shape[0] < 1:
        raise ValueError(
            f"`data` must have shape (N, *event), N >= 1, and `x` (B, *event) with the same "
            f"event; got `data` {tuple(data.shape)} and `x` {tuple(x.shape)}"
        )
    for name, value in (("block_size", block_size), ("band_capacity", band_capacity)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1
        ):
            raise ValueError(f"`{name}` must be None or an integer >= 1, got {value!r}")
    if not isinstance(compiled, bool):
        raise TypeError(f"`compiled` must be a bool, got {type(compiled).__name__}")
    tolerance = mg.check_tolerance(tolerance)
    n, batch = int(data.shape[0]), int(x.shape[0])
    flat = data.reshape(n, -1)
    if weights is not None:
        weights = _tensor("weights", weights)
        _like("data", data, "weights", weights, same_shape=False)
        if tuple(weights.shape) != (n,):
            raise ValueError(f"`weights` must have shape (N,) = {(n,)}, got {tuple(weights.shape)}")
    if compiled and any(a is not None and a.requires_grad for a in (data, x, weights)):
        raise ValueError(
            "`compiled=True` is for inference: `data`, `x` and `weights` must not require grad"
        )
    arr = mg.prepare_data(_ns, flat, weights)
    c = path.schedule.arrays(_ns, _time(t, x))
    alpha, sigma = c.alpha.reshape(batch), c.sigma.reshape(batch)
    rows = mg.query_rows(
        _ns, x.reshape(batch, -1), alpha, sigma, arr.mean, arr.y_max, arr.lq_max, tolerance
    )
    block = max(1, mg.BLOCK_ELEMENTS // batch) if block_size is None else int(block_size)
    tiers = _TIERS if band_capacity is None else (int(band_capacity),)
    # below the top tier, the first B // 64 overflowing rows are spilled to it
    spill = [batch // 64] * (len(tiers) - 1) + [0]
    tier = 0
    # the compiled kernel takes blocks of one shape (the last padded with zero-weight
    # points), the eager path blocks of `block` points
    size = mg.block_layout(n, block)[1] if compiled else block
    p = mg.empty_partial(_ns, rows) if compiled else None
    for start in range(0, n, size):
        stop = min(start + size, n)
        blk = (arr.pts[start:stop], arr.aug_t[:, start:stop], arr.log_q[start:stop])
        if compiled:
            if stop - start < size:
                blk = mg.pad_points(_ns, *blk, size - (stop - start))
            p, overflow = _compiled_run(
                p, rows, *blk, torch.tensor(start, device=x.device), tiers[tier], spill[tier]
            )
            if bool(overflow.any()):
                p = _exact_rows(rows, p, overflow, blk, start)
                tier = min(tier + 1, len(tiers) - 1)
        else:
            part, overflow = mg.block_partial_capped(
                _ns, rows, *blk, _top_candidates, offset=start, exp=_block_exp
            )
            assert not bool(overflow.any())  # the candidates are sized to the widest band
            p = part if p is None else mg.merge_partials(_ns, rows, p, part)
    assert p is not None
    st = mg.finish(_ns, rows, p)
    outs = []
    for name in names:
        out = mg.readout(_ns, name, rows, st, c, arr.mean)
        outs.append(out if out.ndim == 1 else out.reshape(x.shape))
    return outs[0] if isinstance(quantity, str) else tuple(outs)


# ---------------------------------------------------------------------------------------
# coupled paths and couplings (flowspec.coupled_paths, flowspec.couplings)
# ---------------------------------------------------------------------------------------
def coupled_sample_and_target(
    path: Any, x0: Tensor, x1: Tensor, eps: Tensor, t: Any
) -> tuple[Tensor, Tensor]:
    r""":meth:`flowspec.coupled_paths.CoupledPath.sample_and_target`, fused.

    .. math:: x_t = \alpha_t x_1 + \sigma_t x_0 + \gamma_t\varepsilon, \qquad
              u = \dot\alpha_t x_1 + \dot\sigma_t x_0 + \dot\gamma_t\varepsilon

    The schedule's and the noise scale's coefficients from the core; each output is one
    buffer written by ``mul`` and updated in place (a constant noise coefficient rides
    as a scalar, a zero one is skipped: the I-CFM target is the single kernel
    ``x1 - x0``). Traces under ``torch.compile(fullgraph=True)``.

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> from flowspec.coupled_paths import CoupledPath, ConstantNoise
    >>> fst = fs.backends.get("torch")
    >>> path = CoupledPath(fs.CondOT(), ConstantNoise(0.5))
    >>> x_t, u = fst.coupled_sample_and_target(path, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.5)
    >>> x_t.tolist(), u.tolist()
    ([[1.0]], [[1.0]])
    """
    from ..coupled_paths import CoupledPath

    if not isinstance(path, CoupledPath):
        raise TypeError(f"`path` must be a flowspec CoupledPath, got {validation.describe(path)}")
    _tensor("x0", x0)
    _like("x0", x0, "x1", x1)
    _like("x0", x0, "eps", eps)
    tt = _time(t, x0, x_name="x0")
    c = path.schedule.coefficients(_ns, tt)
    n = path.noise.coefficients(_ns, tt)
    x_t = _combine(c.alpha, x1, c.sigma, x0)
    u = _combine(c.d_alpha, x1, c.d_sigma, x0)
    for out, g in ((x_t, n.gamma), (u, n.d_gamma)):
        if isinstance(g, float):
            if g != 0.0:
                out.add_(eps, alpha=g)
        else:
            out.addcmul_(g, eps)
    return x_t, u


def entropic_pairs(
    x0: Tensor,
    x1: Tensor,
    reg: float,
    *,
    generator: torch.Generator | None = None,
    **sinkhorn_options: Any,
) -> tuple[Tensor, Tensor]:
    r""":func:`flowspec.couplings.entropic_pairs` with the uniforms drawn from ``generator``.

    The plan is the core's log-domain Sinkhorn on these tensors (on their device); each
    x0 keeps its place and its partner is drawn from its row.

    Examples
    --------
    >>> import torch, flowspec as fs
    >>> fst = fs.backends.get("torch")
    >>> x0 = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> a, b = fst.entropic_pairs(x0, x0.flip(0), 0.01, generator=torch.Generator().manual_seed(0))
    >>> b.tolist()
    [[0.0], [1.0]]
    """
    from ..couplings import entropic_pairs as _pairs

    _tensor("x0", x0)
    dtype, device = _placement(generator, None, None, x0)
    u = torch.rand(int(x0.shape[0]), **_given(generator=generator, dtype=dtype, device=device))
    return _pairs(x0, x1, reg, u, **sinkhorn_options)


# ---------------------------------------------------------------------------------------
# Discrete Flow Matching (flowspec.discrete): the random draws, from a torch.Generator
# ---------------------------------------------------------------------------------------
# The discrete core takes caller-drawn uniforms so that it runs on every array library;
# these wrappers draw them with ``torch.rand`` (explicit generator, device and dtype) and
# call the core, so there is one definition of every discrete formula.


def _token_tensor(name: str, x: Any) -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {validation.describe(x)}")
    return x


def _discrete_uniforms(
    shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor, dtype: Any
) -> Tensor:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {generator!r}")
    if dtype is None:
        dtype = torch.get_default_dtype()
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"`dtype` must be a torch floating dtype, got {dtype!r}")
    return torch.rand(shape, generator=generator, dtype=dtype, device=like.device)


def discrete_source_sample(
    path: Any,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: Any = None,
) -> Tensor:
    """Source tokens of a :class:`flowspec.discrete.MixturePath`, shape ``shape`` (int64).

    Uniform source: ``floor(u V)`` of ``torch.rand`` uniforms; mask source: the mask
    token. See :meth:`flowspec.discrete.MixturePath.source_sample`.
    """
    like = torch.empty((), device=device)
    u = _discrete_uniforms(tuple(int(s) for s in shape), generator, like, torch.float64)
    return path.source_sample(u)


def discrete_sample(
    path: Any,
    x0: Tensor,
    x1: Tensor,
    t: Any,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""A draw of :math:`x_t \sim p_t(\cdot \mid x_0, x_1)` of a mixture path.

    :meth:`flowspec.discrete.MixturePath.sample` with ``torch.rand`` uniforms in t's
    dtype (torch's default dtype when t is a Python number), on x1's device.
    """
    x1 = _token_tensor("x1", x1)
    dtype = t.dtype if isinstance(t, Tensor) else None
    u = _discrete_uniforms(tuple(x1.shape), generator, x1, dtype)
    return path.sample(x0, x1, t, u)


def discrete_euler(
    rate: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    *,
    steps: int,
    generator: torch.Generator | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    dtype: Any = None,
    return_path: bool = False,
) -> Tensor:
    r"""The discrete Euler (jump) sampler with ``torch.rand`` uniforms.

    :func:`flowspec.discrete.euler` on the grid :math:`t_k = t_0 + k h`; ``rate(t, x)``
    gets t of shape (B,) in ``dtype`` (torch's default dtype if None). The uniforms
    (steps, *x0.shape) are drawn up front from ``generator``.
    """
    from ..discrete import euler as _discrete_euler_core

    x0 = _token_tensor("x0", x0)
    validation.euler_times(steps, t0, t1)
    u = _discrete_uniforms((int(steps), *x0.shape), generator, x0, dtype)
    return _discrete_euler_core(rate, x0, u, steps=steps, t0=t0, t1=t1, return_path=return_path)


__all__ += ["discrete_euler", "discrete_sample", "discrete_source_sample"]


# ---------------------------------------------------------------------------------------
# Riemannian Flow Matching (flowspec.riemannian): random sources and autograd divergences
# ---------------------------------------------------------------------------------------
def riemannian_source(
    manifold: Any,
    batch: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> Tensor:
    """``batch`` samples of ``manifold``'s source, drawing its normals or uniforms from ``generator``.

    The core takes caller-drawn randomness (``manifold.source_sample(draws)``); this
    draws it with torch (``torch.randn`` / ``torch.rand``) in the given dtype (default:
    torch's default) and device.

    Examples
    --------
    >>> import torch
    >>> from flowspec.backends.torch import riemannian_source
    >>> from flowspec.riemannian import Sphere
    >>> x = riemannian_source(Sphere(2), 4, generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape), bool(torch.allclose(x.norm(dim=1), torch.ones(4, dtype=x.dtype)))
    ((4, 3), True)
    """
    from ..riemannian import Manifold

    if not isinstance(manifold, Manifold):
        raise TypeError(
            f"`manifold` must be a flowspec.riemannian manifold, got {validation.describe(manifold)}"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"`batch` must be an integer >= 1, got {validation.describe(batch)}")
    kind, shape = manifold.source_draws
    draw = torch.randn if kind == "normal" else torch.rand
    z = draw((batch, *shape), generator=generator, dtype=dtype, device=device)
    return manifold.source_sample(z)


def riemannian_divergence(manifold: Any, field: Field, t: Any, x: Tensor) -> Tensor:
    r"""The Riemannian divergence :math:`\mathrm{div}_g v = \mathrm{tr}(P_x\, \partial_x v)`, shape (B,).

    For a manifold embedded in a flat (pseudo-)Euclidean space with the induced metric,
    the Levi-Civita derivative of a tangent field is the tangential projection of its
    ambient derivative, so the divergence is the trace of ``proju`` composed with the
    field's Jacobian (any smooth extension off the manifold gives the same value). One
    forward-mode product per embedding coordinate (D of them), the whole batch at
    once (a field that mixes samples breaks this, as for :func:`divergence`).

    Parameters
    ----------
    manifold : flowspec.riemannian.Manifold
    field : callable
        ``field(t, x)`` with t of shape (B,).
    t : float or tensor, shape () or (B,)
    x : tensor, shape (B, *event_shape)
        Points of the manifold.
    """
    from ..riemannian import Manifold

    if not isinstance(manifold, Manifold):
        raise TypeError(
            f"`manifold` must be a flowspec.riemannian manifold, got {validation.describe(manifold)}"
        )
    if not callable(field):
        raise TypeError(f"`field` must be a callable field(t, x), got {validation.describe(field)}")
    manifold._check(x=x)
    tb = _batch_time(t, x)
    batch = int(x.shape[0])
    size = validation.event_size(x)
    out = torch.zeros(batch, dtype=x.dtype, device=x.device)
    for j in range(size):
        e = torch.zeros(batch, size, dtype=x.dtype, device=x.device)
        e[:, j] = 1.0
        _, jv = _jvp(lambda y: field(tb, y), (x,), (e.reshape(x.shape),))
        out = out + manifold.proju(x, jv).reshape(batch, size)[:, j]
    return out


def riemannian_log_likelihood(
    manifold: Any,
    field: Field,
    x1: Tensor,
    log_p0: Callable[[Tensor], Tensor],
    steps: int = 100,
    method: str = "euler",
) -> Tensor:
    r""":func:`flowspec.riemannian.log_likelihood` with :func:`riemannian_divergence` by autograd.

    Returns
    -------
    tensor, shape (B,)
    """
    from ..riemannian import log_likelihood as _riemannian_log_likelihood

    def div(tb: Tensor, x: Tensor) -> Tensor:
        return riemannian_divergence(manifold, field, tb, x)

    return _riemannian_log_likelihood(manifold, field, x1, log_p0, div, steps=steps, method=method)  # type: ignore[arg-type]

r"""The mixture path over sequences of tokens (Gat et al., 2024, Sec. 2.2).

Each token of :math:`x_t` is, independently, its data value or its source value:

.. math:: p_t(x^i \mid x_0, x_1) = \kappa_t\, \delta_{x_1^i}(x^i) + (1 - \kappa_t)\, \delta_{x_0^i}(x^i),

with :math:`x_0` drawn from a source that is uniform over the vocabulary or the point
mass at a mask token. Marginalising the source gives the path conditioned on the data
alone, :math:`p_t(x^i \mid x_1) = \kappa_t \delta_{x_1^i}(x^i) + (1 - \kappa_t) p(x^i)`.

The core draws no random numbers: the caller passes uniforms ``u`` in [0, 1) (a NumPy
``Generator``, ``torch.rand``, ``jax.random.uniform``), so the same code runs on every
Array API library; the torch and JAX backends add wrappers that take a generator or
a key.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .. import validation
from ..typing import Array
from . import _checks
from .rates import _check_schedule, conditional_rate, posterior_to_rate, safe_log
from .schedules import KappaSchedule

__all__ = ["MixturePath"]


class MixturePath:
    r"""The mixture path of a kappa schedule over a vocabulary of ``vocab_size`` tokens.

    Parameters
    ----------
    schedule : KappaSchedule
        :math:`\kappa_t`: :class:`Linear`, :class:`Polynomial`, :class:`Cosine`, ...
    vocab_size : int
        V, the number of token values (including the mask token, if any).
    mask_token : int or None
        None (default): the source is uniform over the V values. An integer in [0, V):
        the source is the point mass at that token (masked, "absorbing" source).

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> path = fd.MixturePath(fd.Linear(), vocab_size=4, mask_token=3)
    >>> x1 = np.array([[0, 1, 2]]); u = np.array([[0.2, 0.7, 0.4]])
    >>> path.sample(path.source_sample(u), x1, 0.5, u).tolist()
    [[0, 3, 2]]
    """

    __slots__ = ("mask_token", "schedule", "vocab_size")

    schedule: KappaSchedule
    vocab_size: int
    mask_token: int | None

    def __init__(
        self, schedule: KappaSchedule, vocab_size: int, mask_token: int | None = None
    ) -> None:
        _check_schedule(schedule)
        vocab = _checks.vocab_size("vocab_size", vocab_size)
        if mask_token is not None:
            if (
                isinstance(mask_token, bool)
                or not isinstance(mask_token, numbers.Integral)
                or not 0 <= mask_token < vocab
            ):
                raise ValueError(
                    f"`mask_token` must be None or an integer in [0, {vocab}), got "
                    f"{validation.describe(mask_token)}"
                )
            mask_token = int(mask_token)
        object.__setattr__(self, "schedule", schedule)
        object.__setattr__(self, "vocab_size", vocab)
        object.__setattr__(self, "mask_token", mask_token)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"MixturePath is immutable: cannot set `{name}`")

    def __repr__(self) -> str:
        return (
            f"MixturePath({self.schedule!r}, vocab_size={self.vocab_size}, "
            f"mask_token={self.mask_token!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MixturePath) and (
            (self.schedule, self.vocab_size, self.mask_token)
            == (other.schedule, other.vocab_size, other.mask_token)
        )

    def __hash__(self) -> int:
        return hash((self.schedule, self.vocab_size, self.mask_token))

    # -- the source -----------------------------------------------------------------

    def source_sample(self, u: Array) -> Array:
        """Tokens of the source from uniforms ``u`` in [0, 1), shape (B, *event), as int64.

        Uniform source: ``floor(u V)`` (clipped to V - 1 against rounding of ``u V``);
        mask source: the mask token everywhere.
        """
        xp = validation.namespace(u=u)
        _checks.check_uniforms(xp, "u", u)
        validation.check_batch("u", u)
        if self.mask_token is not None:
            return xp.full(
                tuple(u.shape), self.mask_token, dtype=xp.int64, device=validation.device(u)
            )
        idx = xp.astype(xp.floor(u * float(self.vocab_size)), xp.int64)
        return xp.clip(idx, 0, self.vocab_size - 1)

    def source_log_prob(self, x: Array, dtype: Any = None) -> Array:
        """Per-token log-probability of the source, shape of ``x`` (-inf off the mask)."""
        xp = validation.namespace(x=x)
        _checks.check_tokens(xp, "x", x, self.vocab_size)
        dtype = _checks.float_dtype(xp) if dtype is None else dtype
        if self.mask_token is None:
            return xp.full(
                tuple(x.shape), -math.log(self.vocab_size), dtype=dtype, device=validation.device(x)
            )
        zero = xp.zeros(tuple(x.shape), dtype=dtype, device=validation.device(x))
        return xp.where(x == self.mask_token, zero, zero - math.inf)

    def _source_prob(self, xp: Any, x: Array, dtype: Any) -> Array:
        if self.mask_token is None:
            return xp.full(
                tuple(x.shape), 1.0 / self.vocab_size, dtype=dtype, device=validation.device(x)
            )
        return xp.astype(x == self.mask_token, dtype)

    # -- the path -------------------------------------------------------------------

    def sample(self, x0: Array, x1: Array, t: Array | float, u: Array) -> Array:
        r"""A draw of :math:`x_t \sim p_t(\cdot \mid x_0, x_1)`: token i is :math:`x_1^i` if
        :math:`u^i < \kappa_t`, else :math:`x_0^i`.

        Parameters
        ----------
        x0, x1 : integer arrays, shape (B, *event)
        t : float or array, shape () or (B,), in ``u``'s dtype
        u : floating array, shape (B, *event)
            Uniforms in [0, 1), one per token.

        Returns
        -------
        integer array, shape (B, *event), dtype of ``x1``
        """
        xp = validation.namespace(x0=x0, x1=x1, t=t, u=u)
        _checks.check_tokens(xp, "x1", x1, self.vocab_size)
        _checks.check_tokens(xp, "x0", x0, self.vocab_size)
        _checks.check_same_shape("x0", x0, "x1", x1)
        _checks.check_uniforms(xp, "u", u)
        _checks.check_same_shape("u", u, "x1", x1)
        tt = validation.time_array(xp, t, u, x_name="u")
        kappa = self.schedule(tt).kappa
        return xp.where(u < kappa, x1, xp.astype(x0, x1.dtype))

    def log_prob(self, x: Array, x1: Array, t: Array | float, x0: Array | None = None) -> Array:
        r"""Log-probability of the conditional path, summed over tokens, shape (B,).

        Without ``x0``: :math:`\log p_t(x \mid x_1) = \sum_i \log(\kappa_t \delta_{x_1^i}(x^i)
        + (1 - \kappa_t) p(x^i))`, the source marginalised. With ``x0``: the path
        :math:`p_t(x \mid x_0, x_1)`. ``-inf`` off the support. A Python-number ``t`` is
        evaluated in the namespace's default floating dtype.
        """
        xp = validation.namespace(x=x, x1=x1, t=t, x0=x0)
        _checks.check_tokens(xp, "x", x, self.vocab_size)
        _checks.check_tokens(xp, "x1", x1, self.vocab_size)
        _checks.check_same_shape("x", x, "x1", x1)
        dtype = _checks.float_dtype(xp, t)
        tt = _checks.times(xp, t, x, dtype)
        c = self.schedule(tt)
        if x0 is None:
            source = self._source_prob(xp, x, dtype)
        else:
            _checks.check_tokens(xp, "x0", x0, self.vocab_size)
            _checks.check_same_shape("x0", x0, "x", x)
            source = xp.astype(x == x0, dtype)
        per_token = safe_log(xp, c.kappa * xp.astype(x == x1, dtype) + c.complement * source)
        return xp.sum(xp.reshape(per_token, (x.shape[0], -1)), axis=1)

    def rate(self, x: Array, x1: Array, t: Array | float) -> Array:
        r"""The conditional rate :math:`u^i_t(y, x \mid x_1)`, shape (B, *event, V).

        See :func:`~flowspec.discrete.conditional_rate`.
        """
        return conditional_rate(self.schedule, x, x1, t, self.vocab_size)

    def posterior_to_rate(
        self,
        x: Array,
        t: Array | float,
        *,
        probs: Array | None = None,
        logits: Array | None = None,
    ) -> Array:
        """The marginal rate of a posterior; see :func:`~flowspec.discrete.posterior_to_rate`."""
        if probs is not None and int(probs.shape[-1]) != self.vocab_size:
            raise ValueError(f"`probs` must have {self.vocab_size} values on its last axis")
        if logits is not None and int(logits.shape[-1]) != self.vocab_size:
            raise ValueError(f"`logits` must have {self.vocab_size} values on its last axis")
        return posterior_to_rate(self.schedule, x, t, probs=probs, logits=logits)

"""Conversions between the kit's NumPy arrays and torch tensors (for the peer adapters)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np


def torch() -> Any:
    """The torch module, imported on first use (the peers that need it install it)."""
    return importlib.import_module("torch")


def tensor(a: np.ndarray) -> Any:
    """A NumPy array as a CPU tensor of the same dtype (shares memory; peers never write)."""
    return torch().from_numpy(np.ascontiguousarray(a))


def column(t: np.ndarray, like: np.ndarray) -> Any:
    """t of shape (B,) as a (B, 1, ..., 1) tensor against ``like``."""
    return tensor(np.reshape(t, (t.shape[0],) + (1,) * (like.ndim - 1)))


def wrap_field(field: Callable[[Any, Any], Any], batch: int) -> Callable[[Any, Any], Any]:
    """The kit's NumPy field as a torch function of (t, x), t a 0-d or (B,) tensor."""

    def torch_field(t: Any, x: Any) -> Any:
        tn = t.detach().cpu().numpy()
        out = field(tn, x.detach().cpu().numpy())
        return torch().from_numpy(np.asarray(out)).to(x.device)

    return torch_field

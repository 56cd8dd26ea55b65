"""Golden test vectors for implementations in other languages.

``write(directory)`` (``flowspec golden DIR``) writes, for every schedule of the
contract, the inputs and the reference outputs of every function, plus the CFM loss
and the Euler sampler, as ``.npz`` files and a ``manifest.json`` describing each
array (shape, dtype, SHA-256 of its bytes), each file (SHA-256) and the parameters.
The archives are written byte-for-byte reproducibly (fixed zip timestamps, no
compression, sorted members), so the same flowspec and NumPy produce identical
files; they hold plain float64 arrays (and one int64 array, the Euler step counts) and
load with
``np.load(path, allow_pickle=False)``.

Non-finite outputs are part of the vectors: they mark the singular points of a
schedule (``inf``/``nan`` where sigma_t = 0 or a derivative diverges).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..losses import cfm_loss
from ..ode import euler
from ..paths import GaussianPath
from ..schedules import CATALOGUE

__all__ = ["GOLDEN_VERSION", "build", "load", "write"]

#: Version of the vector files' layout (bumped on any change of names or contents).
GOLDEN_VERSION = 1
_SEED = 20230201  # fixed: the vectors never change with a user's seed
_DATE = (1980, 1, 1, 0, 0, 0)
#: The times of the path vectors: both endpoints, their neighbours, the interior.
TIMES = (0.0, 1e-12, 1e-6, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0 - 1e-6, 1.0 - 1e-12, 1.0)
EULER_STEPS = (1, 3, 49)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _params(s: Any) -> dict[str, Any]:
    return {k: getattr(s, k) for k in getattr(s, "__dataclass_fields__", {})}


def euler_field(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The field of the Euler vectors: v(t, x) = cos(3 t) x + t, t per sample."""
    tt = np.reshape(t, (x.shape[0],) + (1,) * (x.ndim - 1))
    return np.cos(3.0 * tt) * x + tt


def build() -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """file name -> (parameters, arrays): every vector, in memory."""
    rng = np.random.default_rng(_SEED)
    t = np.asarray(TIMES)
    b = t.shape[0]
    x0, x1, x = (rng.standard_normal((b, 3)) for _ in range(3))
    out: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {}
    for s in CATALOGUE:
        path = GaussianPath(s)
        with np.errstate(all="ignore"):
            c = s(t)
            arrays = {
                "t": t,
                "x0": x0,
                "x1": x1,
                "x": x,
                "alpha": c.alpha,
                "sigma": c.sigma,
                "d_alpha": c.d_alpha,
                "d_sigma": c.d_sigma,
                "sample": path.sample(x0, x1, t),
                "target": path.target(x0, x1, t),
                "velocity": path.velocity(x, x1, t),
                "log_prob": path.log_prob(x, x1, t),
                "score": path.score(x, x1, t),
                "divergence": path.divergence(x, x1, t),
            }
        params = {"schedule": type(s).__name__, **_params(s)}
        out[f"path_{_slug(repr(s))}.npz"] = (params, arrays)
    v, u = rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 2, 3))
    out["cfm_loss.npz"] = (
        {"function": "cfm_loss"},
        {
            "v": v,
            "u": u,
            "none": cfm_loss(v, u, reduction="none"),
            "mean": np.asarray(cfm_loss(v, u, reduction="mean")),
            "sum": np.asarray(cfm_loss(v, u, reduction="sum")),
        },
    )
    e0 = rng.standard_normal((3, 2))
    arrays = {"x0": e0, "steps": np.asarray(EULER_STEPS, dtype=np.int64)}
    for n in EULER_STEPS:
        arrays[f"x1_steps_{n}"] = euler(euler_field, e0, steps=n)
    out["euler.npz"] = (
        {"function": "euler", "field": "v(t, x) = cos(3 t) x + t", "t0": 0.0, "t1": 1.0},
        arrays,
    )
    return out


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(
                member, np.asarray(arrays[name], order="C"), allow_pickle=False
            )
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write(directory: str | Path) -> dict[str, Any]:
    """Write every vector file and ``manifest.json`` into ``directory``; return the manifest."""
    from .. import __version__

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    for name, (params, arrays) in build().items():
        data = _npz_bytes(arrays)
        (root / name).write_bytes(data)
        files[name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "parameters": params,
            "arrays": {
                k: {
                    "shape": list(a.shape),
                    "dtype": a.dtype.str,
                    "sha256": hashlib.sha256(np.asarray(a, order="C").tobytes()).hexdigest(),
                }
                for k, a in sorted(arrays.items())
            },
        }
    manifest = {
        "schema": "flowspec.golden",
        "version": GOLDEN_VERSION,
        "flowspec_version": __version__,
        "numpy_version": np.__version__,
        "conventions": (
            "batch-first arrays; t has shape (B,); x_t = alpha x1 + sigma x0; "
            "log_prob and divergence have shape (B,); non-finite entries mark singular "
            "points of the schedule; arrays are little-endian float64 unless stated"
        ),
        "files": files,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def load(directory: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read every vector file listed in the manifest, checking each SHA-256 (never unpickles)."""
    root = Path(directory)
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("schema") != "flowspec.golden":
        raise ValueError(f"`directory` {str(root)!r} holds no flowspec golden manifest")
    out = {}
    for name, meta in manifest["files"].items():
        data = (root / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ValueError(f"{name}: SHA-256 does not match the manifest")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            out[name] = {k: z[k] for k in z.files}
    return out

"""Golden vectors: regenerate bit-identically, load without unpickling, match the reference."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import flowspec as fs
from flowspec.cli import main
from flowspec.conformance import golden


def test_regenerates_bit_identically(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ma = golden.write(a)
    assert main(["golden", str(b)]) == 0
    mb = json.loads((b / "manifest.json").read_text())
    assert ma == mb
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        if name != "manifest.json":
            assert (
                hashlib.sha256((a / name).read_bytes()).hexdigest() == ma["files"][name]["sha256"]
            )


def test_manifest_describes_every_array_and_loads_without_pickle(tmp_path):
    manifest = golden.write(tmp_path)
    assert manifest["schema"] == "flowspec.golden" and manifest["version"] == golden.GOLDEN_VERSION
    vectors = golden.load(tmp_path)
    assert len(vectors) == len(manifest["files"]) == len(fs.schedules.CATALOGUE) + 2
    for name, arrays in vectors.items():
        meta = manifest["files"][name]["arrays"]
        assert set(arrays) == set(meta)
        for k, arr in arrays.items():
            assert list(arr.shape) == meta[k]["shape"] and arr.dtype.str == meta[k]["dtype"]
            assert arr.dtype != object
            assert hashlib.sha256(arr.tobytes()).hexdigest() == meta[k]["sha256"]
        with np.load(tmp_path / name, allow_pickle=False) as z:  # plain np.load works too
            assert sorted(z.files) == sorted(arrays)


def test_vectors_are_the_reference(tmp_path):
    golden.write(tmp_path)
    vectors = golden.load(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for name, params in ((n, m["parameters"]) for n, m in manifest["files"].items()):
        if "schedule" not in params:
            continue
        kwargs = {k: v for k, v in params.items() if k != "schedule"}
        path = fs.GaussianPath(getattr(fs, params["schedule"])(**kwargs))
        v = vectors[name]
        with np.errstate(all="ignore"):
            # the same formula on the same inputs: identical bits (NaN where singular)
            np.testing.assert_array_equal(path.velocity(v["x"], v["x1"], v["t"]), v["velocity"])
            np.testing.assert_array_equal(path.sample(v["x0"], v["x1"], v["t"]), v["sample"])
        assert v["t"][0] == 0.0 and v["t"][-1] == 1.0
    e = vectors["euler.npz"]
    for n in e["steps"]:
        np.testing.assert_array_equal(
            fs.euler(golden.euler_field, e["x0"], steps=int(n)), e[f"x1_steps_{n}"]
        )


def test_tampered_file_is_rejected(tmp_path):
    golden.write(tmp_path)
    f = tmp_path / "cfm_loss.npz"
    data = bytearray(f.read_bytes())
    data[-30] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        golden.load(tmp_path)

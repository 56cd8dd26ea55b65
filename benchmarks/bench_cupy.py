"""Fused CuPy kernels against the Array API path on CuPy and hand-written CuPy.

Run on a machine with a CUDA device:

    python benchmarks/bench_cupy.py [--quick] [--markdown FILE]

For each shape and dtype it times (CUDA events, median of repeats, one process):

- the training step ``(x_t, target)``: the fused kernel
  (``fs.backends.get("cupy").sample_and_target``), the reference's Array API path on
  CuPy arrays (``path.sample_and_target``) and hand-written CuPy
  (``a * x1 + s * x0; da * x1 + ds * x0`` with precomputed (B, 1) coefficients);
- one Euler update ``x += h v`` in place: the fused kernel against ``x + h * v``
  (Array API) and ``cupy.add(x, h * v, out=x)`` (hand-written);

and prints times, ratios, and the achieved memory bandwidth of the fused kernels as a
fraction of the device's peak (bytes each kernel must move / time; peak from the
device's memory clock and bus width, or a table of known devices).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import cupy
import numpy as np

import flowspec as fs

# Peak DRAM bandwidth (GB/s) of devices whose attributes under-report it (HBM stacks
# report the memory clock per pin differently); used when the name matches.
KNOWN_PEAK_GBS = {
    "H200": 4800.0,
    "H100 SXM": 3350.0,
    "H100 PCIe": 2000.0,
    "H100 NVL": 3900.0,
    "A100-SXM4-80GB": 2039.0,
    "A100-SXM4-40GB": 1555.0,
    "A100-PCIE-40GB": 1555.0,
    "A100 80GB PCIe": 1935.0,
    "L4": 300.0,
    "L40S": 864.0,
    "A10G": 600.0,
    "T4": 320.0,
    "V100": 900.0,
}


def peak_bandwidth() -> tuple[float, str]:
    """Peak DRAM bandwidth in GB/s and where the number came from."""
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    for key, value in KNOWN_PEAK_GBS.items():
        if key in name:
            return value, f"table entry {key!r} for {name}"
    clock_khz = props.get("memoryClockRate", 0)
    bus_bits = props.get("memoryBusWidth", 0)
    if clock_khz and bus_bits:
        # double data rate: 2 transfers per clock
        gbs = 2.0 * clock_khz * 1e3 * bus_bits / 8 / 1e9
        return gbs, f"2 x memoryClockRate {clock_khz} kHz x {bus_bits}-bit bus for {name}"
    return float("nan"), f"unknown for {name}"


def time_ms(fn, repeats: int, inner: int) -> float:
    """Median over ``repeats`` of the mean time of ``inner`` back-to-back calls (ms)."""
    fn()
    cupy.cuda.Device().synchronize()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    samples = []
    for _ in range(repeats):
        start.record()
        for _ in range(inner):
            fn()
        stop.record()
        stop.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, stop) / inner)
    return statistics.median(samples)


def bench_shape(fcp, path, dtype, shape, repeats: int, inner: int) -> list[tuple]:
    """Rows (op, dtype, shape, fused ms, Array API ms, hand-written ms, fused GB/s)."""
    out: list[tuple] = []
    rng = cupy.random.default_rng(0)
    x0 = rng.standard_normal(shape, dtype=dtype)
    x1 = rng.standard_normal(shape, dtype=dtype)
    t = rng.random(shape[0], dtype=dtype)
    c = path.schedule(t)
    col = (shape[0],) + (1,) * (len(shape) - 1)
    a, s, da, ds = (cupy.reshape(v, col) for v in c)
    item = np.dtype(dtype).itemsize
    size = x0.size
    fused = time_ms(lambda: fcp.sample_and_target(path, x0, x1, t), repeats, inner)
    api = time_ms(lambda: path.sample_and_target(x0, x1, t), repeats, inner)
    hand = time_ms(lambda: (a * x1 + s * x0, da * x1 + ds * x0), repeats, inner)
    # the fused step reads x0, x1 and writes x_t, target: 4 arrays
    gbs = 4 * size * item / (fused * 1e-3) / 1e9
    out.append(("step", np.dtype(dtype).name, shape, fused, api, hand, gbs))

    x = x0.copy()
    v = x1
    plan_c = cupy.full((1,), 1e-3, dtype=dtype)
    kernel = fcp._kernel(fcp._logic.AXPY)
    fused_e = time_ms(lambda: kernel(x, v, plan_c, 0, x), repeats, inner)
    api_e = time_ms(lambda: x + 1e-3 * v, repeats, inner)
    hand_e = time_ms(lambda: cupy.add(x, 1e-3 * v, out=x), repeats, inner)
    # reads x, v and writes x: 3 arrays
    gbs_e = 3 * size * item / (fused_e * 1e-3) / 1e9
    out.append(("euler", np.dtype(dtype).name, shape, fused_e, api_e, hand_e, gbs_e))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    fcp = fs.backends.get("cupy")
    peak, source = peak_bandwidth()
    repeats, inner = (5, 10) if args.quick else (15, 20)
    shapes = [(4096, 2), (256, 3, 32, 32), (1024, 3, 64, 64)]
    if not args.quick:
        shapes.append((64, 3, 256, 256))
    rows = []
    path = fs.GaussianPath(fs.VariancePreserving())
    for dtype in (np.float32, np.float64):
        for shape in shapes:
            rows += bench_shape(fcp, path, dtype, shape, repeats, inner)

    lines = [
        f"Device peak bandwidth: {peak:.0f} GB/s ({source})",
        "",
        "| op | dtype | shape | fused ms | Array API ms | hand-written ms | API/fused | hand/fused | fused GB/s | % of peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for op, dt, shape, fused, api, hand, gbs in rows:
        lines.append(
            f"| {op} | {dt} | {shape} | {fused:.4f} | {api:.4f} | {hand:.4f} | "
            f"{api / fused:.2f} | {hand / fused:.2f} | {gbs:.0f} | {100 * gbs / peak:.0f}% |"
        )
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

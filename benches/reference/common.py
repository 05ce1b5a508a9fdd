"""Shared helpers of the PyTorch reference benchmarks: the RESULT line and peak RSS."""

import math
import statistics
import time


def peak_rss_mb():
    """VmHWM of this process in MiB (0 where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def emit(threads, **values):
    """Prints `RESULT key=value ...` with peak RSS and the thread count, as the Rust side does."""
    parts = [f"{k}={v}" for k, v in values.items()]
    parts.append(f"peak_rss_mb={peak_rss_mb():.1f}")
    parts.append(f"threads={threads}")
    print("RESULT " + " ".join(parts), flush=True)


def median(xs):
    return statistics.median(xs) if xs else 0.0


def emit_rate(threads, step, batch, warmup, iters, sync=lambda: None):
    """Runs `step()` (which returns a check value) `warmup` times untimed and `iters` times timed, each
    between two `sync()` calls, and emits images/s, the median seconds per batch and the last check."""
    times, check = [], 0.0
    for i in range(warmup + max(1, iters)):
        sync()
        t = time.perf_counter()
        check = step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    if not math.isfinite(check):
        raise SystemExit("non-finite output")
    m = median(times)
    emit(threads, images_per_s=f"{batch / m:.2f}", seconds_per_batch=f"{m:.4f}", check=f"{check:.4f}")

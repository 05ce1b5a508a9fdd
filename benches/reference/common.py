"""Shared helpers of the PyTorch reference benchmarks: the RESULT line and peak RSS."""

import statistics


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

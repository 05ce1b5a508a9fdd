"""ONNX Runtime (CPU) inference speed of a file exported by tlcv: random [B, 3, S, S] inputs in 0..1,
median seconds per batch after warm-up.

usage: onnx_infer.py --file MODEL.onnx [--batch 32] [--size 64] [--warmup 1] [--iters 3] [--threads T]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, median  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    opts = ort.SessionOptions()
    if a.threads > 0:
        opts.intra_op_num_threads = a.threads
    sess = ort.InferenceSession(a.file, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    xs = np.random.default_rng(0).random((a.batch, 3, a.size, a.size), dtype=np.float32)
    times = []
    check = 0.0
    for i in range(a.warmup + max(1, a.iters)):
        t = time.perf_counter()
        out = sess.run(None, {name: xs})[0]
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
        check = float(np.abs(out).mean())
    s = median(times)
    emit(a.threads, images_per_s=f"{a.batch / s:.2f}", seconds_per_batch=f"{s:.4f}", check=f"{check:.4f}")


if __name__ == "__main__":
    main()

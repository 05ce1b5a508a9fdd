"""torchvision.ops.nms (IoU 0.5) on the boxes written by `compare prepare` (float32 x1 y1 x2 y2 score).

usage: nms.py --boxes FILE [--iters 20] [--threads T]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, median  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", required=True)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    data = torch.from_numpy(np.fromfile(a.boxes, dtype="<f4").reshape(-1, 5).copy())
    boxes, scores = data[:, :4].contiguous(), data[:, 4].contiguous()
    times = []
    for _ in range(max(1, a.iters) + 1):
        t = time.perf_counter()
        kept = torchvision.ops.nms(boxes, scores, 0.5)
        times.append(time.perf_counter() - t)
    kept = kept.tolist()
    checksum = sum((r + 1) * i % 1_000_003 for r, i in enumerate(kept))
    emit(torch.get_num_threads(), ms=f"{median(times[1:]) * 1e3:.4f}", boxes=len(scores), kept=len(kept),
         checksum=checksum)


if __name__ == "__main__":
    main()

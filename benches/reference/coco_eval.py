"""pycocotools on the benchmark files: COCO(gt), loadRes(dets), COCOeval(bbox) evaluate, accumulate,
summarize; prints the time and the 12 stats.

usage: coco_eval.py --gt GT.json --dets DETS.json
"""

import argparse
import contextlib
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit  # noqa: E402

from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gt", required=True)
    ap.add_argument("--dets", required=True)
    a = ap.parse_args()
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(a.gt)
        dt = gt.loadRes(a.dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    seconds = time.perf_counter() - t
    stats = ",".join(repr(float(s)) for s in ev.stats)
    emit(1, seconds=f"{seconds:.3f}", stats=stats)


if __name__ == "__main__":
    main()

"""Ultralytics' YOLOv8 / YOLO11 `DetectionModel` (80 classes, random weights) on random [B, 3, S, S]
inputs in 0-1: an inference batch (`fuse()`d as Ultralytics' predictor fuses it, eval, no_grad) or a
training step (`model.loss` = v8DetectionLoss against the same four boxes per image as
benches/src/yolo.rs, backward, SGD momentum 0.937 nesterov, weight decay 5e-4); `--mode bf16` runs
under torch.autocast("cpu", dtype=torch.bfloat16); `cl` stores the model and input channels-last
(`torch.channels_last`), `cl+bf16` both.

usage: yolo.py --arch yolov8n --task train|infer [--mode fp32|bf16|cl|cl+bf16] [--batch 16] [--size 640] [--warmup 1]
               [--iters 3] [--threads T]
"""

import argparse
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit_rate  # noqa: E402

import torch  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

BOXES = [[0.25, 0.3, 0.2, 0.3], [0.7, 0.25, 0.3, 0.2], [0.3, 0.75, 0.15, 0.15], [0.7, 0.7, 0.4, 0.4]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="yolov8n")
    ap.add_argument("--task", required=True)
    ap.add_argument("--mode", default="fp32")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = DetectionModel(f"{a.arch}.yaml", nc=80, verbose=False)
    model.args = get_cfg()
    xs = torch.rand(a.batch, 3, a.size, a.size)
    train = a.task == "train"
    if not train:
        model = model.fuse(verbose=False).eval()
    n = len(BOXES)
    batch = {
        "img": xs,
        "batch_idx": torch.arange(a.batch).repeat_interleave(n).float(),
        "cls": torch.arange(n).repeat(a.batch).float()[:, None],
        "bboxes": torch.tensor(BOXES).repeat(a.batch, 1),
    }
    if a.mode not in ("fp32", "bf16", "cl", "cl+bf16"):
        raise SystemExit(f"--mode must be fp32, bf16, cl or cl+bf16, got {a.mode}")
    if a.mode.startswith("cl"):
        model = model.to(memory_format=torch.channels_last)
        xs = xs.contiguous(memory_format=torch.channels_last)
        batch["img"] = xs
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True, weight_decay=5e-4)
    model.train(train)
    bf16 = a.mode.endswith("bf16")
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    def step():
        if train:
            opt.zero_grad(set_to_none=False)
            with autocast():
                preds = model(xs)
            loss, _ = model.loss(batch, preds)
            loss.sum().backward()
            opt.step()
            return loss.sum().item()
        with torch.no_grad(), autocast():
            return model(xs)[0].float().abs().mean().item()

    emit_rate(torch.get_num_threads(), step, a.batch, a.warmup, a.iters)


if __name__ == "__main__":
    main()

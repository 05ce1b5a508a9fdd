"""torchvision backbones: a training step (SGD momentum 0.9, weight decay 1e-4, cross-entropy, 1000
classes) or an inference batch (eval, no_grad) on random [B, 3, S, S] inputs, in fp32, channels-last
(`cl`; `cl+fold` adds torch.fx's conv-bn fusion for inference) or bf16
(torch.autocast(device, dtype=torch.bfloat16), fp32 master weights), on the CPU or a CUDA GPU (timed after
`torch.cuda.synchronize()`).

usage: models.py --arch resnet18|efficientnet_b0 --mode fp32|cl|cl+fold|bf16 --task train|infer
                 [--batch 32] [--size 224] [--warmup 1] [--iters 3] [--threads T] [--device cpu|cuda]
"""

import argparse
import contextlib
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, median  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--mode", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = getattr(torchvision.models, a.arch)(weights=None, num_classes=1000).to(dev)
    xs = torch.randn(a.batch, 3, a.size, a.size).to(dev)
    ys = torch.randint(1000, (a.batch,)).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if a.mode in ("cl", "cl+fold"):
        model = model.to(memory_format=torch.channels_last)
        xs = xs.contiguous(memory_format=torch.channels_last)
    if a.mode == "cl+fold" and a.task == "infer":
        from torch.fx.experimental.optimization import fuse
        model = fuse(model.eval())
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if a.mode == "bf16" else contextlib.nullcontext
    train = a.task == "train"
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train(train)
    times = []
    check = 0.0
    for i in range(a.warmup + max(1, a.iters)):
        sync()
        t = time.perf_counter()
        if train:
            opt.zero_grad(set_to_none=False)
            with autocast():
                logits = model(xs)
            loss = torch.nn.functional.cross_entropy(logits.float(), ys)
            loss.backward()
            opt.step()
            check = loss.item()
        else:
            with torch.no_grad(), autocast():
                check = model(xs).float().abs().mean().item()
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    if not math.isfinite(check):
        raise SystemExit("non-finite output")
    m = median(times)
    emit(torch.get_num_threads(), images_per_s=f"{a.batch / m:.2f}", seconds_per_batch=f"{m:.4f}",
         check=f"{check:.4f}")


if __name__ == "__main__":
    main()

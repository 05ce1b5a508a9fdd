"""torchvision backbones, and EfficientNet-Lite0 from lite0.py (which torchvision lacks; the same architecture
as the Rust model): a training step (SGD momentum 0.9, weight decay 1e-4, cross-entropy, 1000 classes) or an
inference batch (eval, no_grad) on random [B, 3, S, S] inputs, on the CPU or a CUDA GPU (timed after
`torch.cuda.synchronize()`), in one of these modes:

- `fp32`; `cl`: model and input channels-last; `cl+fold` (inference): channels-last and torch.fx's
  conv-bn fusion (`torch.fx.experimental.optimization.fuse`);
- `bf16`: torch.autocast(device, dtype=torch.bfloat16) with fp32 weights, NCHW (training: mixed precision
  with fp32 master weights; inference: autocast casts the weights on every call);
- `cl+bf16`: training as `bf16` plus channels-last model and input; inference with the model and input
  really in bf16 (`.to(torch.bfloat16)`) and channels-last, no autocast (PyTorch's fastest CPU inference);
- `cl+bf16+fold` (inference): `cl+bf16` after the fx conv-bn fusion (fused in float32, then cast).

usage: models.py --arch resnet18|resnet50|efficientnet_b0|efficientnet_lite0
                 --mode fp32|cl|cl+fold|bf16|cl+bf16|cl+bf16+fold
                 --task train|infer [--batch 32] [--size 224] [--warmup 1] [--iters 3] [--threads T]
                 [--device cpu|cuda]
"""

import argparse
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit_rate  # noqa: E402
from lite0 import efficientnet_lite0  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402

MODES = ("fp32", "cl", "cl+fold", "bf16", "cl+bf16", "cl+bf16+fold")


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
    if a.mode not in MODES:
        raise SystemExit(f"--mode must be one of {', '.join(MODES)}, got {a.mode}")
    train = a.task == "train"
    fold = a.mode.endswith("fold")
    if train and fold:
        raise SystemExit("folded batch norms are for inference only")
    if a.arch == "efficientnet_lite0":
        model = efficientnet_lite0(num_classes=1000).to(dev)
    elif hasattr(torchvision.models, a.arch):
        model = getattr(torchvision.models, a.arch)(weights=None, num_classes=1000).to(dev)
    else:
        raise SystemExit(f"torchvision has no {a.arch}")
    xs = torch.randn(a.batch, 3, a.size, a.size).to(dev)
    ys = torch.randint(1000, (a.batch,)).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if a.mode.startswith("cl"):
        model = model.to(memory_format=torch.channels_last)
        xs = xs.contiguous(memory_format=torch.channels_last)
    if fold:
        from torch.fx.experimental.optimization import fuse
        model = fuse(model.eval())
    # Inference in cl+bf16*: a real bf16 model and input; everything else bf16 runs under autocast.
    bf16_model = not train and a.mode.startswith("cl+bf16")
    if bf16_model:
        model = model.to(torch.bfloat16).to(memory_format=torch.channels_last)
        xs = xs.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    use_autocast = "bf16" in a.mode and not bf16_model
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if use_autocast else contextlib.nullcontext
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train(train)
    def step():
        if train:
            opt.zero_grad(set_to_none=False)
            with autocast():
                logits = model(xs)
            loss = torch.nn.functional.cross_entropy(logits.float(), ys)
            loss.backward()
            opt.step()
            return loss.item()
        with torch.no_grad(), autocast():
            return model(xs).float().abs().mean().item()

    emit_rate(torch.get_num_threads(), step, a.batch, a.warmup, a.iters, sync)


if __name__ == "__main__":
    main()

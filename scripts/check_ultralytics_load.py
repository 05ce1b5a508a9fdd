"""Checks that a safetensors state dict written by tlcv loads into Ultralytics strictly and computes
what tlcv computed.

Usage: python check_ultralytics_load.py MODEL FILE [INPUT.npy RUST_OUTPUT.npy]

Builds `ultralytics.nn.tasks.DetectionModel("MODEL.yaml", nc=N)` (MODEL e.g. yolov8n or yolo11n; N from
the file's class branch `model.<last>.cv3.0.2.weight`), loads FILE with `load_state_dict(..., strict=True)`
and, given INPUT.npy and RUST_OUTPUT.npy, runs INPUT through the model in eval mode and requires, for the
box rows and for the class-score rows of the `[N, 4 + nc, A]` output separately,
max |ultralytics - rust| <= 1e-4 * max |ultralytics|.
FILE may also be an Ultralytics `.pt` that you trust (e.g. `assets/models/yolov8n.pt`): Ultralytics then
unpickles it itself and its `ema`, else `model`, in float32 gives the state dict.
Exit code 0 on success; 1 with a one-line reason otherwise. Run it with the reference venv
(`.tlcv/venv-ref/bin/python`, made by `cargo xtask setup --reference`).
"""
import re
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from ultralytics.nn.tasks import DetectionModel


def class_count(sd):
    heads = [k for k in sd if re.fullmatch(r"model\.\d+\.cv3\.0\.2\.weight", k)]
    if not heads:
        sys.exit("check_ultralytics_load: no model.<i>.cv3.0.2.weight in the file")
    return sd[max(heads, key=lambda k: int(k.split(".")[1]))].shape[0]


def read_pt(path):
    ck = torch.load(path, map_location="cpu", weights_only=False)  # trusted files only: runs pickle code
    return (ck.get("ema") or ck["model"]).float().state_dict()


def close(name, ref, got):
    scale = ref.abs().max().item()
    diff = (ref - got).abs().max().item()
    if not scale > 0 or diff > 1e-4 * scale:
        sys.exit(f"check_ultralytics_load: {name} differ: max |diff| {diff:.3e} > 1e-4 * {scale:.3e}")
    print(f"{name} agree: max |diff| {diff:.3e} (scale {scale:.3e})")


def main():
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    name, path = sys.argv[1], sys.argv[2]
    sd = read_pt(path) if path.endswith(".pt") else load_file(path)
    model = DetectionModel(f"{name}.yaml", nc=class_count(sd), verbose=False)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        sys.exit(f"check_ultralytics_load: strict load of {path} into {name} failed: " + " ".join(str(e).split()))
    print(f"{path}: {len(sd)} tensors load strictly into DetectionModel('{name}.yaml')")
    if len(sys.argv) == 5:
        x = torch.from_numpy(np.load(sys.argv[3])).float()
        rust = torch.from_numpy(np.load(sys.argv[4])).float()
        model.eval()
        with torch.no_grad():
            ref = model(x)[0]
        if ref.shape != rust.shape:
            sys.exit(f"check_ultralytics_load: shapes differ: ultralytics {tuple(ref.shape)}, rust {tuple(rust.shape)}")
        close("boxes", ref[:, :4], rust[:, :4])
        close("class scores", ref[:, 4:], rust[:, 4:])


if __name__ == "__main__":
    main()

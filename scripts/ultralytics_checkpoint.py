"""Saves a YOLOv8 / YOLO11 state dict trained by tlcv as an Ultralytics checkpoint.

Usage: python ultralytics_checkpoint.py MODEL WEIGHTS.safetensors CLASSES.json OUT.pt [KEY=VALUE ...]

Builds `ultralytics.nn.tasks.DetectionModel("MODEL.yaml", nc=len(classes))`, loads WEIGHTS with
`load_state_dict(..., strict=True)`, sets its class names from CLASSES.json (a run directory's
`classes.json`) and writes OUT.pt in the layout of Ultralytics' released weights (what its
`strip_optimizer` leaves): the half-precision model under `model`, `ema` None, `train_args` holding
Ultralytics' defaults updated with `model`, `imgsz` and the KEY=VALUE pairs (e.g. `data=shapes`).
The result loads with `YOLO("OUT.pt")` and with `detect train --model MODEL --weights OUT.pt`.
Run it with the reference venv (`.tlcv/venv-ref/bin/python`, made by `cargo xtask setup --reference`).
"""
import datetime
import json
import sys

import torch
from safetensors.torch import load_file
from ultralytics import __version__
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG_DICT


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    name, weights, classes, out = sys.argv[1:5]
    extra = dict(kv.split("=", 1) for kv in sys.argv[5:])
    names = json.load(open(classes))
    model = DetectionModel(f"{name}.yaml", nc=len(names), verbose=False)
    model.load_state_dict(load_file(weights), strict=True)
    model.names = dict(enumerate(names))
    args = {**DEFAULT_CFG_DICT, "model": f"{name}.yaml", **extra}
    model.args = dict(args)
    model = model.eval().half()
    for p in model.parameters():
        p.requires_grad = False
    torch.save(
        {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "version": __version__,
            "license": "AGPL-3.0 License (https://ultralytics.com/license)",
            "docs": "https://docs.ultralytics.com",
            "epoch": -1,
            "best_fitness": None,
            "model": model,
            "ema": None,
            "updates": None,
            "optimizer": None,
            "train_args": args,
            "train_metrics": {},
            "train_results": {},
        },
        out,
    )
    print(f"{out}: {name}, {len(names)} classes ({', '.join(names)})")


if __name__ == "__main__":
    main()

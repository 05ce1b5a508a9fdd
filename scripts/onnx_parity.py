"""Checks exported ONNX files against tlcv's own outputs, for the parity tests of every task crate.

Usage: onnx_parity.py MANIFEST.json

The manifest lists models and, per model, runs: input .npy files and the outputs tlcv's libtorch
forward gave on them (.npy). Each model goes through onnx.checker.check_model(full_check=True) once,
then ONNX Runtime (CPU) runs every input. Comparisons:
  "relative":   max|ort - tlcv| <= rtol * max|tlcv| per output;
  "detections": [N, max_det, 6] rows (x1, y1, x2, y2, score, class) with score > 0, best first, paired
                one to one with the same class, coordinates within rtol * input size and score within
                atol (boxes whose scores tie within atol may come in either order). A box only one side
                kept must be a tie: the other side kept a box of the same class, score within atol,
                overlapping it by more than nms_iou (NMS met the pair in the other order).
Prints one line per check; exits 1 if any failed.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def compare_relative(name, got, want, rtol):
    if got.shape != want.shape:
        return f"{name}: shape {got.shape} != {want.shape}"
    scale = max(float(np.abs(want).max()), 1e-12)
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / scale
    if not err <= rtol:
        return f"{name}: relative error {err:.3e} > {rtol:.0e}"
    return None


def rows(dets):
    """The kept rows of one image's [max_det, 6] block, best score first."""
    kept = dets[dets[:, 4] > 0]
    order = np.lexsort((kept[:, 1], kept[:, 0], -kept[:, 4]))
    return kept[order]


def iou(a, b):
    """IoU of two xyxy boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def compare_detections(name, got, want, rtol, atol, size, nms_iou):
    """Each image's boxes must match one to one: same class, coordinates within rtol * size, score
    within atol. Rows are paired greedily in tlcv's order among ONNX Runtime's unpaired rows, so two
    boxes whose scores tie within atol may come in either order (the runtimes' float sums differ in
    the last bits, and a stable sort then swaps them). Where scores tie, NMS may also meet two
    overlapping boxes in the other order and keep the other one: each box left unpaired on one side
    must have such a partner (same class, score within atol, IoU > nms_iou) left on the other."""
    if got.shape[0] != want.shape[0]:
        return f"{name}: batch {got.shape[0]} != {want.shape[0]}"

    def tied(a, b):
        return a[5] == b[5] and abs(a[4] - b[4]) <= atol and iou(a, b) > nms_iou

    for i in range(want.shape[0]):
        g, w = rows(got[i]), rows(want[i])
        free = np.ones(len(g), dtype=bool)
        unpaired = []
        for j, row in enumerate(w):
            ok = (
                free
                & (g[:, 5] == row[5])
                & (np.abs(g[:, :4] - row[:4]).max(axis=1) <= rtol * size)
                & (np.abs(g[:, 4] - row[4]) <= atol)
            )
            if ok.any():
                free[int(np.argmax(ok))] = False
            else:
                unpaired.append(row)
        left = [g[k] for k in np.flatnonzero(free)]
        for who, mine, theirs in [("tlcv", unpaired, left), ("ONNX Runtime", left, unpaired)]:
            for row in mine:
                if not any(tied(row, other) for other in theirs):
                    near = min(theirs, key=lambda o: abs(o[4] - row[4]), default=None)
                    near = "none" if near is None else near.tolist()
                    return (
                        f"{name}: image {i}: {who} box {row.tolist()} has no match and no tie; "
                        f"the other side's nearest unmatched score is {near}"
                    )
    return None


def main():
    manifest = json.load(open(sys.argv[1]))
    failures = 0
    for model in manifest["models"]:
        path = model["onnx"]
        try:
            onnx.checker.check_model(path, full_check=True)
        except Exception as e:  # noqa: BLE001 - the checker raises several types
            print(f"FAIL {path}: checker: {str(e).splitlines()[0]}")
            failures += 1
            continue
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        for run in model["runs"]:
            x = np.load(run["input"])
            outs = sess.run(None, {sess.get_inputs()[0].name: x})
            for i, want_path in enumerate(run["expected"]):
                want = np.load(want_path)
                label = f"{model['name']} {names[i]} {list(x.shape)}"
                if model.get("compare") == "detections":
                    err = compare_detections(
                        label, outs[i], want, model["rtol"], model["atol"], x.shape[-1], model["nms_iou"]
                    )
                else:
                    err = compare_relative(label, outs[i], want, model["rtol"])
                if err:
                    print(f"FAIL {err}")
                    failures += 1
                else:
                    print(f"ok   {label}")
    print(f"{failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

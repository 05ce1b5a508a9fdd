"""torchvision's data pipeline on the benchmark JPEGs: PIL decode, RandomResizedCrop(224),
RandomHorizontalFlip, ToTensor, Normalize(ImageNet), DataLoader(batch_size=32, num_workers=W).

usage: pipeline.py --dir DIR --workers W [--batch 32] [--epochs 2] [--threads T]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, median  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402


class Jpegs(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths
        self.tf = transforms.Compose([
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with open(self.paths[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.tf(img), 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    paths = sorted(os.path.join(a.dir, n) for n in os.listdir(a.dir) if n.endswith(".jpg"))
    loader = torch.utils.data.DataLoader(
        Jpegs(paths), batch_size=a.batch, shuffle=False, num_workers=a.workers,
        persistent_workers=a.workers > 0)
    shape = None
    for xs, _ in loader:  # warm-up epoch (page cache, worker start)
        shape = shape or tuple(xs.shape)
    rates = []
    for _ in range(max(1, a.epochs)):
        t = time.perf_counter()
        n = sum(xs.shape[0] for xs, _ in loader)
        rates.append(n / (time.perf_counter() - t))
    emit(torch.get_num_threads(), images_per_s=f"{median(rates):.2f}", images=len(paths),
         batch_shape="x".join(str(s) for s in shape))


if __name__ == "__main__":
    main()

"""torch.distributed with the Gloo backend over local processes, as the Rust side's `compare dist`:
`--work allreduce` times one mean all-reduce of random tensors shaped as a torchvision backbone's
parameters, in 25 MB buckets of flattened tensors all in flight before the first wait (DDP's bucket
size and what its reducer does after backward); `--work train` times DistributedDataParallel training
steps (forward, cross-entropy, backward with DDP's overlapped all-reduces, SGD momentum 0.9, weight
decay 1e-4) on random [B, 3, S, S] inputs per rank. Ranks are started with torch.multiprocessing;
rank 0 prints the RESULT line.

usage: dist.py --work allreduce|train [--ranks 2] [--arch resnet18] [--batch 32] [--size 224]
               [--warmup 1] [--iters 3] [--threads 1]
"""

import argparse
import math
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, median  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torchvision  # noqa: E402
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors  # noqa: E402

BUCKET_BYTES = 25 * 2**20


def buckets_of(tensors):
    """Consecutive groups of about BUCKET_BYTES."""
    out, cur, size = [], [], 0
    for t in tensors:
        cur.append(t)
        size += t.numel() * t.element_size()
        if size >= BUCKET_BYTES:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def time_allreduce(model, world, steps):
    grads = [torch.randn_like(p) for p in model.parameters()]
    buckets = buckets_of(grads)
    times = []
    for _ in range(steps):
        dist.barrier()
        t = time.perf_counter()
        flats = [_flatten_dense_tensors(b) for b in buckets]
        works = [dist.all_reduce(f, async_op=True) for f in flats]
        for w, f, b in zip(works, flats, buckets):
            w.wait()
            f.div_(world)
            for g, s in zip(b, _unflatten_dense_tensors(f, b)):
                g.copy_(s)
        times.append(time.perf_counter() - t)
    return times


def time_training(model, a, steps):
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    xs = torch.randn(a.batch, 3, a.size, a.size)
    ys = torch.randint(1000, (a.batch,))
    ddp.train()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(ddp(xs), ys)
        loss.backward()
        opt.step()
        if not math.isfinite(loss.item()):
            raise SystemExit("non-finite loss")
        times.append(time.perf_counter() - t)
    return times


def worker(rank, a, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", rank=rank, world_size=a.ranks)
    torch.manual_seed(rank if a.work == "allreduce" else 0)
    model = getattr(torchvision.models, a.arch)(weights=None, num_classes=1000)
    steps = a.warmup + max(1, a.iters)
    if a.work == "allreduce":
        times = time_allreduce(model, a.ranks, steps)
    else:
        times = time_training(model, a, steps)
    t = median(times[a.warmup:])
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        return
    if a.work == "allreduce":
        emit(torch.get_num_threads(), ms=f"{t * 1e3:.3f}", ranks=a.ranks)
    else:
        emit(torch.get_num_threads(), images_per_s=f"{a.batch * a.ranks / t:.2f}", seconds_per_step=f"{t:.4f}",
             ranks=a.ranks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", choices=["allreduce", "train"], required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(a, port), nprocs=a.ranks, join=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# GPU checks for a lent machine, as one short script: the machine's facts, tlcv's CUDA set-up and training
# smoke test where the machine can build it (it needs crates.io, PyPI and a Rust toolchain), a PyTorch NCCL
# world-size-1 all-reduce, and PyTorch's half of the model matrix on the same GPU (fp32, channels-last,
# bf16 autocast; batch 32 at 224 px). Everything goes to $OUT (or target/gpu_check) as gpu_check.log.
set -u
out=${OUT:-target/gpu_check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
py=${PYTHON:-python3}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "cpus $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
(. /etc/os-release && echo "$PRETTY_NAME"); ldd --version | head -1
for t in cargo rustc cc c++ nvcc; do echo "$t: $(command -v $t || echo missing)"; done
$py -c 'import torch, torchvision; print("torch", torch.__version__, "cuda", torch.version.cuda,
"nccl", ".".join(map(str, torch.cuda.nccl.version())), "torchvision", torchvision.__version__)'
echo "system OpenCV libraries: $(ldconfig -p | grep -c libopencv)"
if timeout 6 $py -c 'import urllib.request as u; u.urlopen("https://pypi.org/simple/", timeout=5)' 2>/dev/null; then
    net=1; echo "network: PyPI reachable"
else
    net=0; echo "network: PyPI unreachable"
fi

echo "== tlcv on CUDA"
if [ "$net" = 1 ] && command -v cargo >/dev/null; then
    cargo xtask setup --cuda && cargo build --release -p classify &&
        target/release/classify train --config configs/classify.toml --name gpu_smoke --epochs 1 \
            --set train.device=cuda
else
    echo "skipped: it needs cargo and a network for crates.io and PyPI (CUDA libtorch 2.13); cargo: $(command -v cargo || echo none), network: $net"
fi

echo "== PyTorch NCCL, world size 1"
MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 $py - <<'PY'
import torch, torch.distributed as dist
dist.init_process_group("nccl", rank=0, world_size=1)
t = torch.arange(4.0, device="cuda")
dist.all_reduce(t)
torch.cuda.synchronize()
print("all_reduce", t.tolist(), "backend", dist.get_backend())
dist.destroy_process_group()
PY

echo "== PyTorch model matrix on the GPU (images/s, median of 20 after 5 warm-up)"
for arch in resnet18 efficientnet_b0; do
    for task in train infer; do
        for mode in fp32 cl bf16; do
            r=$($py benches/reference/models.py --device cuda --arch $arch --mode $mode --task $task \
                --batch 32 --warmup 5 --iters 20 2>&1 | grep RESULT)
            echo "$arch $task $mode: $r"
        done
    done
done

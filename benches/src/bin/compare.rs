//! The Rust half of `cargo xtask bench --compare`: each subcommand runs one workload in this process
//! and prints one line `RESULT key=value ...` (peak RSS included), which xtask pairs with the line of
//! the matching PyTorch script in `benches/reference/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tch::{Device, Kind, Tensor};
use tlcv_benches::{corpus, flops, median, models, pipeline, proc_status_mb, synth, yolo};

#[derive(Parser, Debug)]
#[command(about = "tlcv's side of the PyTorch comparison (run by `cargo xtask bench --compare`)")]
struct Cli {
    /// libtorch intra-op threads (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Untimed, then timed steps of a workload.
#[derive(clap::Args, Debug, Clone, Copy)]
struct Steps {
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    iters: usize,
}

/// Images per step and their side.
#[derive(clap::Args, Debug, Clone, Copy)]
struct Images {
    #[arg(long, default_value_t = 32)]
    batch: i64,
    #[arg(long, default_value_t = 224)]
    size: i64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate the shared inputs (JPEGs, COCO files, NMS boxes) into `--dir`; prints their paths.
    Prepare {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        images: usize,
        #[arg(long, default_value_t = 5000)]
        coco_images: usize,
    },
    /// Data pipeline images/s: `--workers 0` decodes on this thread, `N` on a pool of N threads.
    Pipeline {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        workers: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 2)]
        epochs: usize,
    },
    /// Training or inference images/s of a backbone.
    Model {
        #[arg(long)]
        arch: String,
        /// fp32, cl, cl+fold, bf16, cl+bf16 or cl+bf16+fold.
        #[arg(long)]
        mode: String,
        /// train or infer.
        #[arg(long)]
        task: String,
        #[command(flatten)]
        images: Images,
        #[command(flatten)]
        steps: Steps,
    },
    /// libtorch's matrix-multiply throughput (`--n` x `--n`, float32 and bf16): the peak GFLOP/s that the
    /// model rows' achieved GFLOP/s are a share of.
    Peak {
        #[arg(long, default_value_t = 4096)]
        n: i64,
        /// Measure float32 only (on a CPU without native bf16, where bf16 is emulated).
        #[arg(long)]
        no_bf16: bool,
        #[command(flatten)]
        steps: Steps,
    },
    /// Training or inference images/s of an Ultralytics YOLOv8 / YOLO11 (80 classes).
    Yolo {
        #[arg(long, default_value = "yolov8n")]
        arch: String,
        /// train or infer.
        #[arg(long)]
        task: String,
        /// fp32, bf16, cl (channels-last) or cl+bf16.
        #[arg(long, default_value = "fp32")]
        mode: String,
        #[arg(long, default_value_t = 16)]
        batch: i64,
        #[arg(long, default_value_t = 640)]
        size: i64,
        #[command(flatten)]
        steps: Steps,
    },
    /// Training or inference images/s of the embedded YOLO-style detector or U-Net.
    Task {
        #[arg(long, value_enum)]
        net: tlcv_benches::tasks::Net,
        /// train or infer.
        #[arg(long)]
        task: String,
        /// fp32, bf16, cl (channels-last) or cl+bf16.
        #[arg(long, default_value = "fp32")]
        mode: String,
        #[arg(long, default_value_t = 16)]
        batch: i64,
        /// Input side (0 = the embedded config's).
        #[arg(long, default_value_t = 0)]
        size: i64,
        #[command(flatten)]
        steps: Steps,
    },
    /// A gradient all-reduce or data-parallel training steps over `--ranks` local processes, which this
    /// command starts itself (rank 0 prints the result).
    Dist {
        #[arg(long, value_enum)]
        work: tlcv_benches::dist::Work,
        #[arg(long, default_value_t = 2)]
        ranks: usize,
        #[arg(long, default_value = "resnet18")]
        arch: String,
        #[command(flatten)]
        images: Images,
        #[command(flatten)]
        steps: Steps,
    },
    /// COCO evaluation of `dets` against `gt` (load, evaluate, accumulate, summarise).
    Coco {
        #[arg(long)]
        gt: PathBuf,
        #[arg(long)]
        dets: PathBuf,
    },
    /// Inference images/s of an exported network (`prepare` writes the files) on libtorch or tract.
    Onnx {
        #[arg(long, value_enum)]
        net: tlcv_benches::onnx::Net,
        #[arg(long, value_enum)]
        runtime: tlcv_benches::onnx::Runtime,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 32)]
        batch: i64,
        #[command(flatten)]
        steps: Steps,
    },
    /// `batched_nms` on the boxes of a file written by `prepare` (IoU 0.5, one class).
    Nms {
        #[arg(long)]
        boxes: PathBuf,
        #[arg(long, default_value_t = 20)]
        iters: usize,
    },
}

fn main() -> Result<()> {
    // As the task binaries do; `TLCV_ALLOCATOR=system` measures without it.
    tlcv_core::alloc::keep_freed_memory();
    let cli = Cli::parse();
    if cli.threads > 0 {
        tch::set_num_threads(cli.threads);
        tlcv_core::onnx::runtime::set_threads(cli.threads as usize);
    }
    let line = match cli.cmd {
        Cmd::Prepare { dir, images, coco_images } => prepare(&dir, images, coco_images)?,
        Cmd::Pipeline { dir, workers, batch, epochs } => run_pipeline(&dir, workers, batch, epochs)?,
        Cmd::Model { arch, mode, task, images, steps } => {
            run_model(&arch, &mode, &task, (images.batch, images.size), (steps.warmup, steps.iters))?
        }
        Cmd::Peak { n, no_bf16, steps } => run_peak(n, no_bf16, (steps.warmup, steps.iters)),
        Cmd::Yolo { arch, task, mode, batch, size, steps } => {
            run_yolo(&arch, &task, &mode, (batch, size), (steps.warmup, steps.iters))?
        }
        Cmd::Task { net, task, mode, batch, size, steps } => {
            run_task(net, &task, &mode, (batch, size), (steps.warmup, steps.iters))?
        }
        Cmd::Dist { work, ranks, arch, images, steps } => {
            let Images { batch, size } = images;
            let case = tlcv_benches::dist::DistCase { work, ranks, arch: arch.parse()?, batch, size };
            match tlcv_benches::dist::run(case, (steps.warmup, steps.iters))? {
                Some(line) => line,
                None => return Ok(()),
            }
        }
        Cmd::Coco { gt, dets } => run_coco(&gt, &dets)?,
        Cmd::Nms { boxes, iters } => run_nms(&boxes, iters)?,
        Cmd::Onnx { net, runtime, file, batch, steps } => {
            tlcv_benches::onnx::run(net, runtime, &file, batch, (steps.warmup, steps.iters))?
        }
    };
    println!("RESULT {line} peak_rss_mb={:.1} threads={}", proc_status_mb("VmHWM"), tch::get_num_threads());
    Ok(())
}

fn prepare(dir: &Path, images: usize, coco_images: usize) -> Result<String> {
    let jpegs = corpus::ensure_corpus(images)?;
    let corpus_dir = jpegs.first().and_then(|p| p.parent()).context("empty corpus")?.to_path_buf();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let gt_path = dir.join(format!("coco-gt-{coco_images}.json"));
    let dets_path = dir.join(format!("coco-dets-{coco_images}.json"));
    if !gt_path.is_file() || !dets_path.is_file() {
        let (gt, dets) = synth::coco(coco_images, 100, 11);
        std::fs::write(&gt_path, serde_json::to_vec(&gt)?).context("writing the COCO ground truth")?;
        std::fs::write(&dets_path, serde_json::to_vec(&dets)?).context("writing the COCO detections")?;
    }
    let mut line =
        format!("corpus={} coco_gt={} coco_dets={}", corpus_dir.display(), gt_path.display(), dets_path.display());
    for n in [1000usize, 10000] {
        let path = dir.join(format!("nms-{n}.f32"));
        let (boxes, scores) = synth::nms_boxes(n, 12 + n as u64);
        let bytes: Vec<u8> = boxes
            .iter()
            .zip(&scores)
            .flat_map(|(b, s)| [b[0], b[1], b[2], b[3], *s])
            .flat_map(f32::to_le_bytes)
            .collect();
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        line += &format!(" nms_{n}={}", path.display());
    }
    for (net, path) in tlcv_benches::onnx::prepare(dir)? {
        line += &format!(" onnx_{}={}", net.file_name().split('-').next().unwrap_or("net"), path.display());
    }
    Ok(line)
}

fn jpegs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("no JPEG in {}", dir.display());
    }
    Ok(paths)
}

fn run_pipeline(dir: &Path, workers: usize, batch: usize, epochs: usize) -> Result<String> {
    let paths = Arc::new(jpegs_in(dir)?);
    // 0 workers: one thread does everything (batch normalisation included), as PyTorch's main process.
    rayon::ThreadPoolBuilder::new().num_threads(workers.max(1)).build_global().context("rayon pool")?;
    let run = |epoch: usize| -> Result<Vec<Tensor>> {
        if workers == 0 {
            pipeline::epoch_sync(&paths, batch, epoch)
        } else {
            pipeline::epoch_loader(&paths, batch, epoch)
        }
    };
    let first = run(0)?; // warm-up: page cache and allocator
    let shape = first.first().map(|t| t.size()).unwrap_or_default();
    let mut rates = Vec::new();
    for epoch in 1..=epochs.max(1) {
        let t = Instant::now();
        let batches = run(epoch)?;
        let n: i64 = batches.iter().map(|b| b.size()[0]).sum();
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let shape: Vec<String> = shape.iter().map(i64::to_string).collect();
    Ok(format!("images_per_s={:.2} images={} batch_shape={}", median(&rates), paths.len(), shape.join("x")))
}

/// One model row: `(batch, size)` images per step, `(warmup, iters)` steps.
fn run_model(arch: &str, mode: &str, task: &str, (batch, size): (i64, i64), steps: (usize, usize)) -> Result<String> {
    let arch: tlcv_core::backbones::Arch = arch.parse()?;
    let mode = models::Mode::parse(mode)?;
    let train = match task {
        "train" => true,
        "infer" => false,
        other => bail!("--task must be train or infer, got {other}"),
    };
    let mut m = models::ModelBench::new(arch, batch, size, mode, train)?;
    let step = |m: &mut models::ModelBench| {
        Ok(if train { m.train_step() } else { m.infer().abs().mean(Kind::Float).double_value(&[]) })
    };
    let (seconds, check) = time_steps(&mut m, step, steps)?;
    Ok(rate_line(batch, seconds, check, &flops::result_fields(arch.name(), size, train, mode.bf16())))
}

fn run_yolo(arch: &str, task: &str, mode: &str, (batch, size): (i64, i64), steps: (usize, usize)) -> Result<String> {
    let arch_name = arch.to_string();
    let arch = arch.parse().map_err(anyhow::Error::msg)?;
    let setup = setup_of(task, mode)?;
    let mut m = yolo::YoloBench::new(arch, batch, size, setup)?;
    let step = |m: &mut yolo::YoloBench| {
        if setup.train { m.train_step() } else { Ok(m.infer().abs().mean(Kind::Float).double_value(&[])) }
    };
    let (seconds, check) = time_steps(&mut m, step, steps)?;
    Ok(rate_line(batch, seconds, check, &flops::result_fields(&arch_name, size, setup.train, setup.bf16)))
}

/// Runs `step` `warmup` times untimed, then `iters` times timed: the median seconds and the last
/// step's check value (an error when it is not finite).
fn time_steps<M>(
    m: &mut M,
    mut step: impl FnMut(&mut M) -> Result<f64>,
    (warmup, iters): (usize, usize),
) -> Result<(f64, f64)> {
    let mut times = Vec::new();
    let mut check = 0.0;
    for i in 0..warmup + iters.max(1) {
        let t = Instant::now();
        check = step(m)?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    if !check.is_finite() {
        bail!("non-finite output");
    }
    Ok((median(&times), check))
}

/// The `RESULT` fields of a batch rate: images/s, seconds per batch, the check value, then `extra`.
fn rate_line(batch: i64, seconds: f64, check: f64, extra: &str) -> String {
    format!("images_per_s={:.2} seconds_per_batch={seconds:.4} check={check:.4}{extra}", batch as f64 / seconds)
}

/// `--task` (train or infer) and `--mode` (fp32, bf16, cl or cl+bf16) of the YOLO and task rows.
fn setup_of(task: &str, mode: &str) -> Result<yolo::Setup> {
    let train = match task {
        "train" => true,
        "infer" => false,
        other => bail!("--task must be train or infer, got {other}"),
    };
    let (bf16, channels_last) = match mode {
        "fp32" => (false, false),
        "bf16" => (true, false),
        "cl" => (false, true),
        "cl+bf16" => (true, true),
        other => bail!("--mode must be fp32, bf16, cl or cl+bf16, got {other}"),
    };
    Ok(yolo::Setup { train, bf16, channels_last })
}

fn run_task(
    net: tlcv_benches::tasks::Net,
    task: &str,
    mode: &str,
    (batch, size): (i64, i64),
    steps: (usize, usize),
) -> Result<String> {
    let setup = setup_of(task, mode)?;
    let mut m = tlcv_benches::tasks::TaskBench::new(net, batch, size, setup)?;
    let step = |m: &mut tlcv_benches::tasks::TaskBench| if setup.train { m.train_step() } else { m.infer() };
    let (seconds, check) = time_steps(&mut m, step, steps)?;
    Ok(rate_line(batch, seconds, check, &flops::result_fields(net.name(), m.size(), setup.train, setup.bf16)))
}

/// `compare peak`: `fp32_gflops=...` and, unless `no_bf16`, `bf16_gflops=...`.
fn run_peak(n: i64, no_bf16: bool, steps: (usize, usize)) -> String {
    let mut line = format!("n={n} fp32_gflops={:.1}", flops::matmul_gflops(Kind::Float, n, steps));
    if !no_bf16 {
        line += &format!(" bf16_gflops={:.1}", flops::matmul_gflops(Kind::BFloat16, n, steps));
    }
    line
}

fn run_coco(gt: &Path, dets: &Path) -> Result<String> {
    let t = Instant::now();
    let s = detect::eval::evaluate_files(gt, dets)?;
    let seconds = t.elapsed().as_secs_f64();
    let stats = [
        s.map,
        s.map50,
        s.map75,
        s.map_small,
        s.map_medium,
        s.map_large,
        s.mar1,
        s.mar10,
        s.mar100,
        s.mar_small,
        s.mar_medium,
        s.mar_large,
    ];
    let stats: Vec<String> = stats.iter().map(|v| format!("{v:?}")).collect();
    Ok(format!("seconds={seconds:.3} stats={}", stats.join(",")))
}

fn run_nms(path: &Path, iters: usize) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let vals: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let n = (vals.len() / 5) as i64;
    let all = Tensor::from_slice(&vals).view([n, 5]);
    let boxes = all.narrow(1, 0, 4).contiguous();
    let scores = all.select(1, 4).contiguous();
    let classes = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
    let mut times = Vec::new();
    let mut kept = Tensor::empty([0], (Kind::Int64, Device::Cpu));
    for _ in 0..iters.max(1) + 1 {
        let t = Instant::now();
        kept = detect::nms::batched_nms(&boxes, &scores, &classes, detect::nms::NmsParams::new(0.5, n as usize))?;
        times.push(t.elapsed().as_secs_f64());
    }
    let kept: Vec<i64> = Vec::try_from(&kept)?;
    // Order-sensitive checksum of the kept indices, computed the same way by the reference script.
    let checksum: i64 = kept.iter().enumerate().map(|(r, &i)| (r as i64 + 1) * i % 1_000_003).sum();
    Ok(format!("ms={:.4} boxes={n} kept={} checksum={checksum}", median(&times[1..]) * 1e3, kept.len()))
}

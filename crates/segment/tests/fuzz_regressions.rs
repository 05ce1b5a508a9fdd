//! Replays `tests/fixtures/fuzz/mask_png/` through the call of the cargo-fuzz target
//! `fuzz/fuzz_targets/mask_png.rs`: hand-made hostile PNGs plus every input the fuzzer found. None
//! may panic; a decoded mask holds width x height indices; `err-*` files must be refused.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn mask_png_inputs() {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz/mask_png");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("fixture dir").filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    assert!(files.len() >= 4, "{}: too few inputs", dir.display());
    for p in files {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(&p).unwrap();
        let mut bytes = if data.starts_with(SIGNATURE) { Vec::new() } else { SIGNATURE.to_vec() };
        bytes.extend_from_slice(&data);
        match segment::mask::decode_png_indices(&bytes) {
            Ok(mask) => {
                assert!(!name.starts_with("err-"), "{name}: accepted");
                assert_eq!(mask.data.len(), mask.width * mask.height, "{name}");
            }
            Err(e) => assert!(name.starts_with("err-"), "{name}: refused: {e}"),
        }
    }
}

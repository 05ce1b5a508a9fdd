//! The segmentation mask reader's own PNG decoder (`segment::mask::decode_png_indices`: grey and
//! palette PNGs, 1 to 8 bits, zlib, filters) on arbitrary bytes, given a PNG signature when they lack
//! one so that mutations reach the chunks. A decoded mask must hold exactly width x height indices.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let mut bytes = if data.starts_with(SIGNATURE) { Vec::new() } else { SIGNATURE.to_vec() };
    bytes.extend_from_slice(data);
    if let Ok(mask) = segment::mask::decode_png_indices(&bytes) {
        assert_eq!(mask.data.len(), mask.width * mask.height);
        assert!(mask.width > 0 && mask.height > 0);
    }
});

//! Any bytes given to the image decoder (magic-byte sniffing, header size checks, OpenCV decode): an
//! error or an RGB image of consistent size within the pixel limit, never a panic or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlcv_core::data::{DecodeOptions, decode_bytes};

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions { max_pixels: 1 << 20, target_size: Some(64) };
    if let Ok(img) = decode_bytes(data, std::path::Path::new("fuzz.img"), &opts) {
        assert_eq!(img.data.len(), img.width * img.height * 3);
        assert!(img.width * img.height <= opts.max_pixels);
    }
});

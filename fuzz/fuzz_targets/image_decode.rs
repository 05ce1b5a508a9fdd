//! Any bytes given to the image decoder (magic-byte sniffing, header size checks, the libjpeg shim's
//! whole and region decoding, OpenCV's decoders): an error or an RGB image of consistent size within the
//! pixel limit, never a panic, a crash or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand::{SeedableRng, rngs::StdRng};
use tlcv_core::data::{DecodeOptions, decode_bytes, transforms};

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions { max_pixels: 1 << 20, target_size: Some(64) };
    if let Ok(img) = decode_bytes(data, std::path::Path::new("fuzz.img"), &opts) {
        assert_eq!(img.data.len(), img.width * img.height * 3);
        assert!(img.width * img.height <= opts.max_pixels);
    }
    // A random crop decoded from its region only, at full size and reduced (the seed comes from the data).
    let seed = data.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64));
    for target in [None, Some(16)] {
        let opts = DecodeOptions { target_size: target, ..opts.clone() };
        let mut rng = StdRng::seed_from_u64(seed);
        let path = std::path::Path::new("fuzz.img");
        let crop = transforms::RandomResizedCrop { ratio: (0.75, 1.33), ..transforms::RandomResizedCrop::new(24, 16) };
        if let Ok(img) = crop.decode(data, path, &opts, &mut rng) {
            assert_eq!((img.width, img.height, img.data.len()), (24, 16, 24 * 16 * 3));
        }
    }
});

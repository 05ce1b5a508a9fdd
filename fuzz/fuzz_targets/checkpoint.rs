//! Any bytes given to the checkpoint reader (torch zip, legacy pickle, safetensors, sniffed from the
//! content): an error or a state dict, never a panic, a hang or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tlcv_core::checkpoint::read_state_dict_bytes(data, std::path::Path::new("fuzz.pth"));
});

//! The safetensors path of the checkpoint reader on bytes that always look like safetensors (a header
//! length then a JSON object), so the fuzzer spends its time in the header and tensor checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Input: header JSON, then tensor bytes; the 8-byte length prefix is built here.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (header, rest) = data.split_at(split);
    let mut bytes = (header.len() as u64 + 1).to_le_bytes().to_vec();
    bytes.push(b'{');
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(rest);
    let path = std::path::Path::new("fuzz.safetensors");
    let _ = tlcv_core::checkpoint::read_state_dict_bytes(&bytes, path);
});

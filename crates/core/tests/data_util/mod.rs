//! Helpers shared by the data tests: locating the Debian data and the committed references, and a
//! minimal PNG writer for inputs OpenCV will not encode (palettes, forged headers).
#![allow(clippy::expect_used)] // test failures are panics
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The extracted Debian data; fails (never skips) when it is missing.
pub fn debdata() -> PathBuf {
    let dir = std::env::var_os("TLCV_DEBDATA").map(PathBuf::from).unwrap_or_else(|| root().join(".tlcv/debdata"));
    assert!(dir.join(".done").is_file(), "Debian data missing at {}: run `cargo xtask setup`", dir.display());
    dir
}

/// The committed fixtures of the data tests.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data")
}

/// The reference values written by `tests/fixtures/data/make_refs.py` (Pillow, torchvision).
pub fn refs() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("refs.json")).expect("refs.json");
    serde_json::from_str(&text).expect("refs.json parses")
}

/// A JSON array of integers as bytes.
pub fn u8s(v: &serde_json::Value) -> Vec<u8> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("int") as u8).collect()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    let mut c = kind.to_vec();
    c.extend_from_slice(body);
    out.extend_from_slice(&c);
    out.extend_from_slice(&crc32(&c).to_be_bytes());
}

/// A PNG with the given IHDR fields (`(width, height)`, `(bit depth, colour type)`) and raw
/// scanlines (each already prefixed with filter byte 0), stored uncompressed; `palette` adds a PLTE chunk.
pub fn png(
    (width, height): (u32, u32),
    (bit_depth, colour_type): (u8, u8),
    palette: Option<&[[u8; 3]]>,
    scanlines: &[u8],
) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, colour_type, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    if let Some(p) = palette {
        chunk(&mut out, b"PLTE", &p.concat());
    }
    // zlib stream of "stored" deflate blocks (at most 65535 bytes each).
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if scanlines.is_empty() { vec![&[][..]] } else { scanlines.chunks(65535).collect() };
    for (i, blk) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = blk.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(blk);
    }
    z.extend_from_slice(&adler32(scanlines).to_be_bytes());
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

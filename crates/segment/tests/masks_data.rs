//! Mask reading (grey, 8-bit and 4-bit palette PNGs against Pillow's indices, every PNG filter type from
//! an independent encoder here) and data-set indexing (missing mask, wrong size, unknown values).

#![allow(clippy::expect_used)] // test failures are panics

use std::io::Write;
use std::path::{Path, PathBuf};

use opencv::core::{CV_8UC1, CV_8UC3, Mat, Scalar, Vector};
use opencv::imgcodecs::imwrite;
use segment::data::index_folder;
use segment::mask::{decode_png_indices, read_index_mask};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/masks").join(name)
}

#[test]
fn palette_pngs_read_as_pillow_indices() {
    for (name, w, h) in [("voc_palette", 53, 37), ("palette_4bit", 13, 11)] {
        let m = read_index_mask(&fixture(&format!("{name}.png"))).expect("read");
        let want = std::fs::read(fixture(&format!("{name}.indices.bin"))).expect("indices");
        assert_eq!((m.width, m.height), (w, h), "{name}");
        assert_eq!(m.data, want, "{name}: indices differ from Pillow's");
    }
    // The VOC one has its 255 border band and classes above 15.
    let m = read_index_mask(&fixture("voc_palette.png")).expect("read");
    assert_eq!(m.at(0, 6), 255);
    assert!(m.data.iter().any(|&v| v > 15 && v < 255));
}

/// A grey 8-bit PNG written here with filter type `filter(y)` for row y.
fn encode_grey_png(w: usize, h: usize, px: &[u8], filter: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        let f = filter(y);
        raw.push(f);
        for x in 0..w {
            let cur = px[y * w + x] as i32;
            let a = if x > 0 { px[y * w + x - 1] as i32 } else { 0 };
            let b = if y > 0 { px[(y - 1) * w + x] as i32 } else { 0 };
            let c = if x > 0 && y > 0 { px[(y - 1) * w + x - 1] as i32 } else { 0 };
            let pred = match f {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                _ => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
            };
            raw.push((cur - pred).rem_euclid(256) as u8);
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).expect("zlib");
    let idat = z.finish().expect("zlib");
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&[0, 0, 0, 0]); // CRC (not checked)
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn every_png_filter_type_unfilters() {
    let (w, h) = (17, 10);
    let px: Vec<u8> = (0..w * h).map(|i| ((i * 37 + i / 5 * 11) % 251) as u8).collect();
    let png = encode_grey_png(w, h, &px, |y| (y % 5) as u8);
    let m = decode_png_indices(&png).expect("decode");
    assert_eq!((m.width, m.height), (w, h));
    assert_eq!(m.data, px);
}

#[test]
fn opencv_grey_png_round_trips_and_rgb_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let grey = Mat::new_rows_cols_with_default(4, 6, CV_8UC1, Scalar::all(3.0)).expect("mat");
    let p = dir.path().join("g.png");
    imwrite(p.to_str().expect("utf8"), &grey, &Vector::new()).expect("write");
    let m = read_index_mask(&p).expect("read");
    assert_eq!((m.width, m.height), (6, 4));
    assert!(m.data.iter().all(|&v| v == 3));
    let rgb = Mat::new_rows_cols_with_default(4, 6, CV_8UC3, Scalar::all(3.0)).expect("mat");
    let q = dir.path().join("rgb.png");
    imwrite(q.to_str().expect("utf8"), &rgb, &Vector::new()).expect("write");
    let err = read_index_mask(&q).expect_err("rgb must be refused").to_string();
    assert!(err.contains("rgb.png") && err.contains("RGB"), "{err}");
}

fn write_png(path: &Path, m: &Mat) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    imwrite(path.to_str().expect("utf8"), m, &Vector::new()).expect("write");
}

#[test]
fn indexing_skips_and_names_bad_pairs() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    std::fs::write(root.join("classes.txt"), "bg\nfg\n").expect("classes");
    let img = |w: i32, h: i32| Mat::new_rows_cols_with_default(h, w, CV_8UC3, Scalar::all(90.0)).expect("mat");
    let mask = |w: i32, h: i32, v: f64| Mat::new_rows_cols_with_default(h, w, CV_8UC1, Scalar::all(v)).expect("mat");
    for split in ["train", "val"] {
        write_png(&root.join(format!("images/{split}/good.png")), &img(8, 6));
        write_png(&root.join(format!("masks/{split}/good.png")), &mask(8, 6, 1.0));
    }
    write_png(&root.join("images/train/ignored_ok.png"), &img(8, 6));
    write_png(&root.join("masks/train/ignored_ok.png"), &mask(8, 6, 255.0));
    write_png(&root.join("images/train/nomask.png"), &img(8, 6));
    write_png(&root.join("images/train/small.png"), &img(8, 6));
    write_png(&root.join("masks/train/small.png"), &mask(7, 6, 0.0));
    write_png(&root.join("images/val/unknown.png"), &img(8, 6));
    write_png(&root.join("masks/val/unknown.png"), &mask(8, 6, 2.0));
    let ds = index_folder(root, &[], 255, 1 << 30).expect("index");
    assert_eq!(ds.classes, ["bg", "fg"]);
    let names = |v: &[segment::data::SegSample]| -> Vec<String> {
        v.iter().map(|s| s.image.file_name().expect("name").to_string_lossy().into_owned()).collect()
    };
    assert_eq!(names(&ds.train), ["good.png", "ignored_ok.png"]);
    assert_eq!(names(&ds.val), ["good.png"]);
    assert_eq!(ds.skipped.len(), 3, "{:?}", ds.skipped);
    let all = ds.skipped.reasons().join("\n");
    assert!(all.contains("nomask.png") && all.contains("not found"), "{all}");
    assert!(all.contains("small.png") && all.contains("7x6") && all.contains("8x6"), "{all}");
    assert!(all.contains("unknown.png") && all.contains("unknown class value 2"), "{all}");
}

//! Generator tests on the real Debian data: determinism, split counts, idempotency and a label
//! sanity check on the digits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use opencv::core::Mat;
use opencv::imgcodecs;
use opencv::prelude::*;
use tlcv_datasets::{SPLITS, digits, shapes};

fn debdata() -> PathBuf {
    let dir = std::env::var_os("TLCV_DEBDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tlcv/debdata"));
    assert!(dir.join(".done").is_file(), "Debian data missing at {}: run `cargo xtask setup` first", dir.display());
    dir
}

/// Every file under `dir` (relative path -> bytes).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn count(dir: &Path, split: &str, class: &str) -> usize {
    std::fs::read_dir(dir.join(split).join(class)).unwrap().count()
}

#[test]
fn digits_deterministic_counts_and_idempotent() {
    let deb = debdata();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    let sa = digits::generate(&a, &deb, 30, 7).unwrap();
    let sb = digits::generate(&b, &deb, 30, 7).unwrap();
    let sc = digits::generate(&c, &deb, 30, 8).unwrap();
    assert_eq!(sc.seed, 8);
    assert_eq!(sa, sb);
    assert_eq!((sa.train, sa.val, sa.test), (300, 1000, 2000));
    assert_eq!(sa.classes, (0..10).map(|d| d.to_string()).collect::<Vec<_>>());
    for d in 0..10 {
        let d = d.to_string();
        assert_eq!([count(&a, "train", &d), count(&a, "val", &d), count(&a, "test", &d)], [30, 100, 200]);
    }
    let (fa, fb, fc) = (snapshot(&a), snapshot(&b), snapshot(&c));
    assert_eq!(fa, fb, "same seed must give byte-identical files");
    let names =
        |f: &BTreeMap<PathBuf, Vec<u8>>| f.keys().filter(|k| k.starts_with("train")).cloned().collect::<Vec<_>>();
    assert_ne!(names(&fa), names(&fc), "a different seed must draw a different split");
    assert!(a.join(".done").is_file() && a.join("meta.json").is_file());
    // The splits of one seed are disjoint.
    let mut seen = std::collections::HashSet::new();
    for k in fa.keys().filter(|k| k.extension().is_some_and(|e| e == "png")) {
        assert!(seen.insert(k.file_name().unwrap().to_owned()), "cell {k:?} in two splits");
    }
    // Idempotent: a complete folder is left alone.
    let victim = fa.keys().find(|k| k.extension().is_some_and(|e| e == "png")).unwrap();
    std::fs::write(a.join(victim), b"marker").unwrap();
    let again = digits::generate(&a, &deb, 30, 7).unwrap();
    assert_eq!(again, sa);
    assert_eq!(std::fs::read(a.join(victim)).unwrap(), b"marker");
    assert!(digits::generate(&tmp.path().join("d"), &deb, 201, 7).is_err());
}

#[test]
fn concurrent_generation_of_one_set_succeeds_everywhere_with_one_result() {
    let deb = debdata();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("digits");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| digits::generate(&out, &deb, 10, 3))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = results[0].as_ref().unwrap().clone();
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), &first);
    }
    assert_eq!(count(&out, "train", "4"), 10);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("digits")], "partial folders left behind");
}

/// Mean grey image (20x20, f64) of a class folder.
fn mean_image(dir: &Path) -> Vec<f64> {
    let mut sum = vec![0.0; 400];
    let mut n = 0.0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m: Mat = imgcodecs::imread(p.to_str().unwrap(), imgcodecs::IMREAD_GRAYSCALE).unwrap();
        assert_eq!((m.cols(), m.rows()), (20, 20));
        for (s, &v) in sum.iter_mut().zip(m.data_bytes().unwrap()) {
            *s += v as f64;
        }
        n += 1.0;
    }
    sum.iter().map(|s| s / n).collect()
}

/// Horizontal spread of ink: the standard deviation of the column coordinate weighted by intensity.
fn horizontal_spread(img: &[f64]) -> f64 {
    let total: f64 = img.iter().sum();
    let mean_x: f64 = img.iter().enumerate().map(|(i, v)| (i % 20) as f64 * v).sum::<f64>() / total;
    (img.iter().enumerate().map(|(i, v)| ((i % 20) as f64 - mean_x).powi(2) * v).sum::<f64>() / total).sqrt()
}

#[test]
fn digit_labels_match_the_sheet_layout() {
    let deb = debdata();
    let tmp = tempfile::tempdir().unwrap();
    digits::generate(tmp.path(), &deb, 50, 1).unwrap();
    let spread: Vec<f64> =
        (0..10).map(|d| horizontal_spread(&mean_image(&tmp.path().join("test").join(d.to_string())))).collect();
    // A "1" is a thin vertical stroke; a "0" is a wide ring. Ones must be the narrowest class.
    assert!(spread[1] < 0.75 * spread[0], "spread of 1 ({}) vs 0 ({})", spread[1], spread[0]);
    let narrowest = (0..10).min_by(|&a, &b| spread[a].total_cmp(&spread[b])).unwrap();
    assert_eq!(narrowest, 1, "spreads {spread:?}");
    // A "0" has a hole: its centre is darker than its ring, unlike an "8"'s crossing or a "1"'s stroke.
    let zero = mean_image(&tmp.path().join("val").join("0"));
    let one = mean_image(&tmp.path().join("val").join("1"));
    assert!(zero[10 * 20 + 10] < one[10 * 20 + 10]);
}

#[test]
fn shapes_deterministic_counts_and_decodable() {
    let deb = debdata();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    let sa = shapes::generate(&a, &deb, 8, 3).unwrap();
    shapes::generate(&b, &deb, 8, 3).unwrap();
    shapes::generate(&c, &deb, 8, 4).unwrap();
    assert_eq!(sa.per_class, [8, 2, 2]);
    assert_eq!((sa.train, sa.val, sa.test), (48, 12, 12));
    assert!(sa.sources.len() >= 10, "backgrounds used: {:?}", sa.sources);
    for class in shapes::CLASSES {
        for (split, n) in SPLITS.iter().zip(sa.per_class) {
            assert_eq!(count(&a, split, class), n, "{split}/{class}");
        }
    }
    let (fa, fb, fc) = (snapshot(&a), snapshot(&b), snapshot(&c));
    assert_eq!(fa, fb, "same seed must give byte-identical files");
    assert_eq!(fa.keys().collect::<Vec<_>>(), fc.keys().collect::<Vec<_>>());
    let differing = fa.iter().filter(|(k, v)| k.extension().is_some_and(|e| e == "jpg") && fc[*k] != **v).count();
    assert_eq!(differing, 72, "a different seed must change every image");
    let mut distinct = std::collections::HashSet::new();
    for (k, v) in fa.iter().filter(|(k, _)| k.extension().is_some_and(|e| e == "jpg")) {
        let m = imgcodecs::imdecode(&opencv::core::Vector::<u8>::from_slice(v), imgcodecs::IMREAD_COLOR).unwrap();
        assert_eq!((m.cols(), m.rows(), m.channels()), (96, 96, 3), "{k:?}");
        distinct.insert(v.clone());
    }
    assert_eq!(distinct.len(), 72, "every image must be different");
}

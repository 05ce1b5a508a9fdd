//! The prefetching loader (coverage, skipping, determinism), data set indexing (ImageFolder, CSV) and
//! the decoded-image cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;
use tlcv_core::data::folder::{from_csv, image_folder};
use tlcv_core::data::{DataError, DecodeOptions, ImageCache, Loader, RgbImage, decode_file, to_tensor};

/// A 4x4 PNG whose red channel is `v`, encoded with OpenCV.
fn tiny_png(v: u8) -> Vec<u8> {
    use opencv::core::{Mat, Scalar, Vector};
    let m = Mat::new_rows_cols_with_default(4, 4, opencv::core::CV_8UC3, Scalar::new(0.0, 0.0, v as f64, 0.0)).unwrap();
    let mut buf = Vector::<u8>::new();
    opencv::imgcodecs::imencode(".png", &m, &mut buf, &Vector::new()).unwrap();
    buf.as_slice().to_vec()
}

/// 23 files: every 5th (0, 5, 10, 15, 20) is broken in a different way.
fn mixed_files(dir: &Path) -> (Vec<PathBuf>, BTreeSet<usize>) {
    let mut paths = Vec::new();
    let mut bad = BTreeSet::new();
    for i in 0..23 {
        let p = dir.join(format!("img_{i:02}.png"));
        let bytes = match i {
            0 => Vec::new(),
            5 => b"not an image".to_vec(),
            10 => tiny_png(1)[..30].to_vec(),
            15 | 20 => {
                paths.push(dir.join(format!("missing_{i}.png")));
                bad.insert(i);
                continue;
            }
            _ => tiny_png(i as u8),
        };
        if i % 5 == 0 {
            bad.insert(i);
        }
        std::fs::write(&p, bytes).unwrap();
        paths.push(p);
    }
    (paths, bad)
}

#[test]
fn loader_skips_bad_files_and_covers_every_good_index_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (paths, bad) = mixed_files(tmp.path());
    let paths = Arc::new(paths);
    for shuffle in [false, true] {
        let loader = Loader::new(paths.len(), 4).shuffled(shuffle, 11);
        assert_eq!(loader.num_batches(), 6);
        for epoch in 0..2 {
            let p = Arc::clone(&paths);
            let load = move |i: usize, _: &mut rand::rngs::StdRng| decode_file(&p[i], &DecodeOptions::default());
            let collate =
                |imgs: Vec<RgbImage>| (imgs.iter().map(|m| m.pixel(0, 0)[0] as usize).collect::<Vec<_>>(), imgs.len());
            let mut seen = Vec::new();
            let mut skipped = BTreeSet::new();
            let mut order = Vec::new();
            for (k, batch) in loader.iter_epoch(epoch, load, collate).enumerate() {
                assert_eq!(batch.batch_index, k);
                let (reds, n) = batch.data.expect("no batch here is all bad");
                assert_eq!(n, batch.indices.len());
                // The collated images are those of the reported indices (red channel = index).
                assert_eq!(reds, batch.indices);
                assert_eq!(batch.indices.len() + batch.skipped.len(), if k < 5 { 4 } else { 3 });
                for s in &batch.skipped {
                    assert!(
                        s.reason.contains(&format!("_{:02}", s.index))
                            || s.reason.contains(&format!("missing_{}", s.index)),
                        "{s:?}"
                    );
                    assert!(skipped.insert(s.index));
                    order.push(s.index);
                }
                seen.extend(&batch.indices);
                order.extend(&batch.indices);
            }
            let good: BTreeSet<usize> = (0..23).filter(|i| !bad.contains(i)).collect();
            assert_eq!(seen.len(), good.len(), "each good index exactly once");
            assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), good);
            assert_eq!(skipped, bad);
            let mut sorted = order.clone();
            sorted.sort();
            if shuffle {
                assert_ne!(order, sorted, "shuffled epoch {epoch} came out in order");
                assert_eq!(loader.epoch_order(epoch).len(), 23);
            } else {
                assert_eq!(seen, good.iter().copied().collect::<Vec<_>>(), "unshuffled keeps index order");
            }
        }
        if shuffle {
            assert_eq!(loader.epoch_order(3), loader.epoch_order(3));
            assert_ne!(loader.epoch_order(0), loader.epoch_order(1));
            assert_ne!(loader.epoch_order(0), Loader::new(23, 4).shuffled(true, 12).epoch_order(0));
        }
    }
}

#[test]
fn loader_whole_batch_failure_drop_last_and_early_drop() {
    // Items 0..4 fail: the first batch is an empty marker, the rest carry on.
    let loader = Loader::new(10, 4).drop_last().prefetch(0);
    assert_eq!(loader.num_batches(), 2);
    let batches: Vec<_> = loader
        .iter_epoch(0, |i, _| if i < 4 { Err(DataError::Other(format!("bad {i}"))) } else { Ok(i) }, |v: Vec<usize>| v)
        .collect();
    assert_eq!(batches.len(), 2, "drop_last drops the 2-item tail");
    assert!(batches[0].data.is_none() && batches[0].skipped.len() == 4 && batches[0].indices.is_empty());
    assert_eq!(batches[0].skipped[2].reason, "bad 2");
    assert_eq!(batches[1].data.as_deref(), Some(&[4, 5, 6, 7][..]));
    // Dropping the iterator early stops the worker without hanging.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let mut it = Loader::new(1000, 10).shuffled(true, 1).prefetch(1).iter_epoch(
        0,
        move |i, _| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(i)
        },
        |v: Vec<usize>| v,
    );
    assert_eq!(it.next().unwrap().indices.len(), 10);
    drop(it);
    assert!(calls.load(Ordering::SeqCst) < 1000, "the worker must stop when the iterator is dropped");
}

#[test]
fn loader_per_sample_rng_is_independent_of_batching_and_threads() {
    let draw = |batch: usize, prefetch: usize, epoch: usize| {
        let mut out = vec![0u64; 50];
        for b in Loader::new(50, batch).shuffled(true, 99).prefetch(prefetch).iter_epoch(
            epoch,
            |i, rng| Ok((i, rng.r#gen::<u64>())),
            |v| v,
        ) {
            for (i, x) in b.data.unwrap() {
                out[i] = x;
            }
        }
        out
    };
    let a = draw(3, 0, 0);
    assert_eq!(a, draw(7, 4, 0), "a sample's randomness must depend only on (seed, epoch, index)");
    assert_ne!(a, draw(3, 0, 1), "a new epoch gives new randomness");
    assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), 50);
}

#[test]
fn loader_reraises_a_panicking_load_function() {
    let r = std::panic::catch_unwind(|| {
        Loader::new(8, 2)
            .prefetch(1)
            .iter_epoch(0, |i, _| if i == 5 { panic!("boom") } else { Ok(i) }, |v: Vec<usize>| v)
            .count()
    });
    assert!(r.is_err());
}

#[test]
fn loader_collates_into_tensors() {
    let loader = Loader::new(6, 4).prefetch(1);
    let shapes: Vec<Vec<i64>> = loader
        .iter_epoch(
            0,
            |i, _| Ok(RgbImage::filled(5, 3, [i as u8, 0, 255])),
            |imgs: Vec<RgbImage>| to_tensor(&imgs, [0.0; 3], [1.0; 3]).map(|t| t.size()).unwrap(),
        )
        .map(|b| b.data.unwrap())
        .collect();
    assert_eq!(shapes, vec![vec![4, 3, 3, 5], vec![2, 3, 3, 5]]);
}

fn touch(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"x").unwrap();
}

#[test]
fn image_folder_layout_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for f in [
        "train/dog/a.JPG",
        "train/dog/b.png",
        "train/cat/c.jpeg",
        "train/cat/d.webp",
        "train/cat/notes.txt",
        "train/ant/e.bmp",
        "val/cat/f.jpg",
        "val/dog/g.PNG",
        "val/dog/h.gif",
    ] {
        touch(&d.join(f));
    }
    let ds = image_folder(d, false).unwrap();
    assert_eq!(ds.classes, ["ant", "cat", "dog"]);
    let names = |s: &[tlcv_core::data::Sample]| {
        s.iter().map(|x| (x.path.file_name().unwrap().to_str().unwrap().to_string(), x.label)).collect::<Vec<_>>()
    };
    assert_eq!(
        names(&ds.train),
        [("e.bmp".into(), 0), ("c.jpeg".into(), 1), ("d.webp".into(), 1), ("a.JPG".into(), 2), ("b.png".into(), 2)]
    );
    assert_eq!(names(&ds.val), [("f.jpg".into(), 1), ("g.PNG".into(), 2)]);
    assert!(ds.test.is_empty());
    assert_eq!(ds.ignored_files, 2);

    // A val class unknown to train.
    touch(&d.join("val/bird/x.jpg"));
    let e = image_folder(d, false).unwrap_err().to_string();
    assert!(e.contains("bird") && e.contains("not among the train classes"), "{e}");
    std::fs::remove_dir_all(d.join("val/bird")).unwrap();
    // The same in test.
    touch(&d.join("test/fish/x.jpg"));
    assert!(image_folder(d, false).unwrap_err().to_string().contains("fish"));
    std::fs::remove_dir_all(d.join("test")).unwrap();
    // An empty train class (only a non-image file).
    touch(&d.join("train/eel/readme.md"));
    let e = image_folder(d, false).unwrap_err().to_string();
    assert!(e.contains("eel") && e.contains("empty class"), "{e}");
    std::fs::remove_dir_all(d.join("train/eel")).unwrap();
    // A missing val split: an error unless allowed.
    std::fs::remove_dir_all(d.join("val")).unwrap();
    let e = image_folder(d, false).unwrap_err().to_string();
    assert!(e.contains("val"), "{e}");
    assert!(image_folder(d, true).unwrap().val.is_empty());
    // No train folder at all.
    assert!(image_folder(d.join("train"), true).unwrap_err().to_string().contains("train"));
}

#[test]
fn csv_index_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("lists")).unwrap();
    std::fs::write(d.join("lists/train.csv"), "path,label\nimgs/a.jpg,zebra\nimgs/b.jpg,ant\n imgs/c.jpg , zebra \n")
        .unwrap();
    std::fs::write(d.join("lists/val.csv"), "label,path\nant,v1.jpg\n").unwrap();
    std::fs::write(d.join("lists/bad_val.csv"), "path,label\nv1.jpg,ant\nv2.jpg,yak\n").unwrap();
    std::fs::write(d.join("lists/bad_header.csv"), "file,class\na.jpg,ant\n").unwrap();
    let ds = from_csv(d.join("lists/train.csv"), Some(&d.join("lists/val.csv")), None).unwrap();
    assert_eq!(ds.classes, ["ant", "zebra"]);
    assert_eq!(ds.train.iter().map(|s| s.label).collect::<Vec<_>>(), [1, 0, 1]);
    assert_eq!(ds.train[2].path, d.join("lists/imgs/c.jpg"), "paths are relative to the CSV's folder");
    assert_eq!((ds.val[0].path.clone(), ds.val[0].label), (d.join("lists/v1.jpg"), 0));
    let e = from_csv(d.join("lists/train.csv"), Some(&d.join("lists/bad_val.csv")), None).unwrap_err().to_string();
    assert!(e.contains("yak") && e.contains("bad_val.csv"), "{e}");
    let e = from_csv(d.join("lists/bad_header.csv"), None, None).unwrap_err().to_string();
    assert!(e.contains("path") && e.contains("label"), "{e}");
}

#[test]
fn image_cache_hits_budget_and_errors() {
    let cache = ImageCache::new(2 * 48); // room for two 4x4 images
    let calls = AtomicUsize::new(0);
    let load = |v: u8| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(RgbImage::filled(4, 4, [v, v, v]))
    };
    for _ in 0..3 {
        assert_eq!(cache.get_or_load(Path::new("a"), || load(1)).unwrap().pixel(0, 0), [1, 1, 1]);
        assert_eq!(cache.get_or_load(Path::new("b"), || load(2)).unwrap().pixel(0, 0), [2, 2, 2]);
        assert_eq!(cache.get_or_load(Path::new("c"), || load(3)).unwrap().pixel(0, 0), [3, 3, 3]);
    }
    // a and b cached once each; c over budget so decoded every time.
    assert_eq!(calls.load(Ordering::SeqCst), 2 + 3);
    assert_eq!((cache.len(), cache.bytes()), (2, 96));
    assert_eq!(cache.stats(), (4, 5));
    assert!(cache.get_or_load(Path::new("d"), || Err(DataError::Other("nope".into()))).is_err());
    assert_eq!(cache.len(), 2, "errors are not cached");
}

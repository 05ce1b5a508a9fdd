//! COCO JSON data sets: `annotations/instances_<split>.json` with the images in `images/<split>/`
//! (or `<split>/`, `<split>2017/`). Categories sorted by id become class indices 0..K; written files
//! use category id = class index + 1. Crowd annotations are skipped (counted as dropped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{DetDataset, DetImage, Issues, MIN_SIDE, Object, check_box, image_size};
use crate::error::{DetectError, Result};

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| DetectError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| DetectError::Json { path: path.to_path_buf(), source })
}

fn bad(path: &Path, jp: &str, message: impl Into<String>) -> DetectError {
    DetectError::BadInput { path: path.to_path_buf(), json_path: jp.into(), message: message.into() }
}

/// The image folder of a split next to `annotations/`.
pub fn image_dir(root: &Path, split: &str) -> PathBuf {
    let candidates = [root.join("images").join(split), root.join(split), root.join(format!("{split}2017"))];
    candidates.iter().find(|d| d.is_dir()).cloned().unwrap_or_else(|| candidates[0].clone())
}

/// Class names (categories sorted by id) and the id → index map of a COCO file.
pub fn categories(root: &Value, path: &Path) -> Result<(Vec<String>, HashMap<i64, usize>)> {
    let cats = root
        .get("categories")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(path, "categories", "missing or not an array"))?;
    let mut list = Vec::new();
    for (i, c) in cats.iter().enumerate() {
        let id = c
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad(path, &format!("categories[{i}].id"), "missing or not an integer"))?;
        let name = c.get("name").and_then(Value::as_str).map_or_else(|| id.to_string(), str::to_string);
        list.push((id, name));
    }
    list.sort_by_key(|(id, _)| *id);
    if list.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(bad(path, "categories", "duplicate category id"));
    }
    let map = list.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    Ok((list.into_iter().map(|(_, n)| n).collect(), map))
}

/// Reads one COCO file; `image_dir` holds the `file_name`s. Bad annotations are reported with the
/// JSON path and dropped; images whose size is neither in the file nor readable are dropped.
pub fn read_split(json_path: &Path, image_dir: &Path) -> Result<(Vec<String>, Vec<DetImage>, Issues)> {
    parse_split(&read_json(json_path)?, json_path, image_dir)
}

/// [`read_split`] on an already parsed document (`json_path` names it in messages).
pub fn parse_split(root: &Value, json_path: &Path, image_dir: &Path) -> Result<(Vec<String>, Vec<DetImage>, Issues)> {
    let (names, cat_index) = categories(root, json_path)?;
    let mut issues = Issues::default();
    let here = |jp: &str, msg: &str| format!("{}: at {jp}: {msg}", json_path.display());
    let imgs = root
        .get("images")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(json_path, "images", "missing or not an array"))?;
    let mut images: Vec<DetImage> = Vec::with_capacity(imgs.len());
    let mut by_id: HashMap<i64, usize> = HashMap::new();
    for (i, im) in imgs.iter().enumerate() {
        let jp = format!("images[{i}]");
        let (Some(id), Some(file)) =
            (im.get("id").and_then(Value::as_i64), im.get("file_name").and_then(Value::as_str))
        else {
            issues.dropped_images += 1;
            issues.messages.push(here(&jp, "needs an integer `id` and a string `file_name`; image dropped"));
            continue;
        };
        let path = image_dir.join(file);
        let dim = |k: &str| im.get(k).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0);
        let (width, height) = match (dim("width"), dim("height")) {
            (Some(w), Some(h)) => (w, h),
            _ => match image_size(&path) {
                Ok(d) => d,
                Err(e) => {
                    issues.dropped_images += 1;
                    issues.messages.push(here(&jp, &format!("no width/height and {e}; image dropped")));
                    continue;
                }
            },
        };
        if by_id.insert(id, images.len()).is_some() {
            return Err(bad(json_path, &format!("{jp}.id"), format!("duplicate image id {id}")));
        }
        images.push(DetImage { path, width, height, objects: Vec::new() });
    }
    let anns = root
        .get("annotations")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(json_path, "annotations", "missing or not an array"))?;
    for (i, a) in anns.iter().enumerate() {
        let jp = format!("annotations[{i}]");
        let Some(&img) = a.get("image_id").and_then(Value::as_i64).and_then(|id| by_id.get(&id)) else {
            issues.drop_box(here(&format!("{jp}.image_id"), "missing, not an integer or not a listed image"));
            continue;
        };
        let Some(&class) = a.get("category_id").and_then(Value::as_i64).and_then(|id| cat_index.get(&id)) else {
            issues.drop_box(here(&format!("{jp}.category_id"), "missing, not an integer or an unknown category"));
            continue;
        };
        if a.get("iscrowd").is_some_and(|v| v.as_i64() == Some(1) || v.as_bool() == Some(true)) {
            issues.drop_box(here(&jp, "crowd region skipped"));
            continue;
        }
        let bbox: Option<Vec<f64>> =
            a.get("bbox").and_then(Value::as_array).map(|v| v.iter().filter_map(Value::as_f64).collect());
        let b = match bbox {
            Some(b) if b.len() == 4 && a["bbox"].as_array().is_some_and(|r| r.len() == 4) => b,
            _ => {
                issues.drop_box(here(&format!("{jp}.bbox"), "expected [x, y, w, h] of 4 numbers"));
                continue;
            }
        };
        let im = &mut images[img];
        match check_box([b[0], b[1], b[0] + b[2], b[1] + b[3]], im.width as f64, im.height as f64, MIN_SIDE) {
            Ok(bbox) => im.objects.push(Object { class, bbox }),
            Err(msg) => issues.drop_box(here(&format!("{jp}.bbox"), &msg)),
        }
    }
    Ok((names, images, issues))
}

/// Reads `root/annotations/instances_{train,val}.json`; both must have the same categories.
pub fn read_dataset(root: &Path) -> Result<DetDataset> {
    let ann = |s: &str| root.join("annotations").join(format!("instances_{s}.json"));
    let (names, train, mut issues) = read_split(&ann("train"), &image_dir(root, "train"))?;
    let (vnames, val, vi) = read_split(&ann("val"), &image_dir(root, "val"))?;
    if vnames != names {
        return Err(bad(&ann("val"), "categories", format!("differ from the training file's {names:?}")));
    }
    issues.extend(vi);
    Ok(DetDataset { names, train, val, issues })
}

/// COCO JSON for `images`, with `file_name` = the image's file name, image ids 1.., category id = class + 1.
pub fn split_json(images: &[DetImage], names: &[String]) -> Value {
    let mut anns = Vec::new();
    let imgs: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, im)| {
            for o in &im.objects {
                let [x1, y1, x2, y2] = o.bbox;
                anns.push(json!({
                    "id": anns.len() + 1, "image_id": i + 1, "category_id": o.class + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                }));
            }
            let file = im.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            json!({"id": i + 1, "file_name": file, "width": im.width, "height": im.height})
        })
        .collect();
    let cats: Vec<Value> = names.iter().enumerate().map(|(i, n)| json!({"id": i + 1, "name": n})).collect();
    json!({"images": imgs, "annotations": anns, "categories": cats})
}

/// Writes `ds` in the COCO layout under `out` (copying the images into `images/<split>/`).
pub fn write_dataset(ds: &DetDataset, out: &Path) -> Result<()> {
    let ann = out.join("annotations");
    std::fs::create_dir_all(&ann).map_err(|source| DetectError::Io { path: ann.clone(), source })?;
    for (split, images) in [("train", &ds.train), ("val", &ds.val)] {
        let dir = out.join("images").join(split);
        std::fs::create_dir_all(&dir).map_err(|source| DetectError::Io { path: dir.clone(), source })?;
        for im in images.iter() {
            super::yolo::copy_into(&im.path, &dir)?;
        }
        let path = ann.join(format!("instances_{split}.json"));
        let text = serde_json::to_string(&split_json(images, &ds.names))
            .map_err(|source| DetectError::Json { path: path.clone(), source })?;
        std::fs::write(&path, text).map_err(|source| DetectError::Io { path, source })?;
    }
    Ok(())
}

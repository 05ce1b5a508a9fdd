//! COCO JSON types and strict loaders whose errors name the file and the JSON path.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DetectError;

/// One image entry of a COCO ground-truth file (only `id` is needed for evaluation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    /// Image id referenced by annotations and detections.
    pub id: i64,
    /// Image width in pixels, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Image height in pixels, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// File name relative to the image folder, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

/// One ground-truth box annotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    /// Annotation id (pycocotools treats a match to id 0 as no match; reproduced here).
    pub id: i64,
    /// The image it belongs to.
    pub image_id: i64,
    /// Its category.
    pub category_id: i64,
    /// Box as `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// Object area used for the small/medium/large ranges (defaults to `w*h` when absent).
    pub area: f64,
    /// Crowd region flag (defaults to 0 when absent).
    pub iscrowd: u8,
}

/// One category entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    /// Category id.
    pub id: i64,
    /// Human-readable name (empty when absent).
    #[serde(default)]
    pub name: String,
}

/// A COCO ground-truth dataset restricted to what bbox evaluation needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoDataset {
    /// All images (images without annotations count for evaluation).
    pub images: Vec<CocoImage>,
    /// All box annotations.
    pub annotations: Vec<CocoAnnotation>,
    /// All categories.
    pub categories: Vec<CocoCategory>,
}

/// One detection of a COCO result file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoDetection {
    /// The image it was predicted on.
    pub image_id: i64,
    /// Predicted category.
    pub category_id: i64,
    /// Box as `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// Confidence.
    pub score: f64,
}

/// Reads a file and parses it as JSON, naming the file on failure.
fn read_json(path: &Path) -> Result<Value, DetectError> {
    let text = std::fs::read_to_string(path).map_err(|source| DetectError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| DetectError::Json { path: path.to_path_buf(), source })
}

/// Value accessors that report the file and JSON path of a bad value.
struct Walker<'p> {
    path: &'p Path,
}

impl Walker<'_> {
    fn bad(&self, json_path: &str, message: impl Into<String>) -> DetectError {
        DetectError::BadInput {
            path: self.path.to_path_buf(),
            json_path: json_path.to_string(),
            message: message.into(),
        }
    }

    fn array<'v>(&self, v: &'v Value, jp: &str) -> Result<&'v Vec<Value>, DetectError> {
        v.as_array().ok_or_else(|| self.bad(jp, format!("expected an array, found {}", kind(v))))
    }

    fn field<'v>(&self, obj: &'v Value, jp: &str, key: &str) -> Result<&'v Value, DetectError> {
        let map = obj.as_object().ok_or_else(|| self.bad(jp, format!("expected an object, found {}", kind(obj))))?;
        map.get(key).ok_or_else(|| self.bad(jp, format!("missing key \"{key}\"")))
    }

    fn int(&self, v: &Value, jp: &str) -> Result<i64, DetectError> {
        v.as_i64().ok_or_else(|| self.bad(jp, format!("expected an integer, found {}", kind(v))))
    }

    fn num(&self, v: &Value, jp: &str) -> Result<f64, DetectError> {
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(self.bad(jp, format!("expected a finite number, found {}", kind(v)))),
        }
    }

    fn bbox(&self, v: &Value, jp: &str) -> Result<[f64; 4], DetectError> {
        let a = self.array(v, jp)?;
        if a.len() != 4 {
            return Err(self.bad(jp, format!("expected [x, y, w, h], found {} numbers", a.len())));
        }
        let mut b = [0.0; 4];
        for (i, x) in a.iter().enumerate() {
            b[i] = self.num(x, &format!("{jp}[{i}]"))?;
        }
        Ok(b)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Loads a COCO ground-truth file, checking types and that annotations reference known images and
/// categories and have unique ids. `area` defaults to `w*h` and `iscrowd` to 0 when absent.
pub fn load_gt(path: &Path) -> Result<CocoDataset, DetectError> {
    let root = read_json(path)?;
    let w = Walker { path };
    let mut ds = CocoDataset::default();
    for (i, im) in w.array(w.field(&root, "$", "images")?, "images")?.iter().enumerate() {
        let jp = format!("images[{i}]");
        let id = w.int(w.field(im, &jp, "id")?, &format!("{jp}.id"))?;
        let dim = |k: &str| im.get(k).and_then(Value::as_u64).and_then(|x| u32::try_from(x).ok());
        let file_name = im.get("file_name").and_then(Value::as_str).map(str::to_string);
        ds.images.push(CocoImage { id, width: dim("width"), height: dim("height"), file_name });
    }
    for (i, c) in w.array(w.field(&root, "$", "categories")?, "categories")?.iter().enumerate() {
        let jp = format!("categories[{i}]");
        let id = w.int(w.field(c, &jp, "id")?, &format!("{jp}.id"))?;
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        ds.categories.push(CocoCategory { id, name });
    }
    let images: HashSet<i64> = ds.images.iter().map(|im| im.id).collect();
    let cats: HashSet<i64> = ds.categories.iter().map(|c| c.id).collect();
    let mut ann_ids = HashSet::new();
    for (i, a) in w.array(w.field(&root, "$", "annotations")?, "annotations")?.iter().enumerate() {
        let jp = format!("annotations[{i}]");
        let sub = |k: &str| format!("{jp}.{k}");
        let id = w.int(w.field(a, &jp, "id")?, &sub("id"))?;
        let image_id = w.int(w.field(a, &jp, "image_id")?, &sub("image_id"))?;
        let category_id = w.int(w.field(a, &jp, "category_id")?, &sub("category_id"))?;
        let bbox = w.bbox(w.field(a, &jp, "bbox")?, &sub("bbox"))?;
        let area = match a.get("area") {
            Some(v) => w.num(v, &sub("area"))?,
            None => bbox[2] * bbox[3],
        };
        let iscrowd = match a.get("iscrowd") {
            Some(Value::Bool(b)) => u8::from(*b),
            Some(v) => u8::from(w.int(v, &sub("iscrowd"))? != 0),
            None => 0,
        };
        if !images.contains(&image_id) {
            return Err(w.bad(&sub("image_id"), format!("image {image_id} is not listed in \"images\"")));
        }
        if !cats.contains(&category_id) {
            return Err(w.bad(&sub("category_id"), format!("category {category_id} is not listed in \"categories\"")));
        }
        if !ann_ids.insert(id) {
            return Err(w.bad(&sub("id"), format!("duplicate annotation id {id}")));
        }
        ds.annotations.push(CocoAnnotation { id, image_id, category_id, bbox, area, iscrowd });
    }
    Ok(ds)
}

/// Loads a COCO result file (a JSON array of detections), checking each against `gt`: its image must
/// be a ground-truth image and its category a ground-truth category.
pub fn load_dets(path: &Path, gt: &CocoDataset) -> Result<Vec<CocoDetection>, DetectError> {
    let root = read_json(path)?;
    let w = Walker { path };
    let images: HashSet<i64> = gt.images.iter().map(|im| im.id).collect();
    let cats: HashSet<i64> = gt.categories.iter().map(|c| c.id).collect();
    let arr = w.array(&root, "$")?;
    let mut dets = Vec::with_capacity(arr.len());
    for (i, d) in arr.iter().enumerate() {
        let jp = format!("[{i}]");
        let sub = |k: &str| format!("{jp}.{k}");
        let image_id = w.int(w.field(d, &jp, "image_id")?, &sub("image_id"))?;
        let category_id = w.int(w.field(d, &jp, "category_id")?, &sub("category_id"))?;
        let bbox = w.bbox(w.field(d, &jp, "bbox")?, &sub("bbox"))?;
        let score = w.num(w.field(d, &jp, "score")?, &sub("score"))?;
        if !images.contains(&image_id) {
            return Err(w.bad(&sub("image_id"), format!("image {image_id} is not in the ground truth")));
        }
        if !cats.contains(&category_id) {
            return Err(w.bad(&sub("category_id"), format!("category {category_id} is not in the ground truth")));
        }
        dets.push(CocoDetection { image_id, category_id, bbox, score });
    }
    Ok(dets)
}

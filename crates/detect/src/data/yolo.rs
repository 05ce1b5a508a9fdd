//! The YOLO layout: `images/<split>/*.jpg`, `labels/<split>/*.txt` with one `class cx cy w h` line
//! per object (normalised to 0..1; an empty file is an image without objects), and a `data.yaml`:
//!
//! ```yaml
//! path: .            # optional root, relative to the yaml's folder
//! train: images/train
//! val: images/val
//! nc: 3              # optional, checked against names
//! names: [cat, dog, bird]   # or a block list "- cat" or a map "0: cat"
//! ```
//!
//! Only this subset of YAML is read (flow lists, block lists, integer-keyed maps, quoted or plain
//! scalars, `#` comments); anything else in the file is ignored.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{DetDataset, DetImage, Issues, MIN_SIDE, Object, check_box, image_size, list_images};
use crate::error::{DetectError, Result};

/// The parts of `data.yaml` that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataYaml {
    /// Folder the split paths are relative to.
    pub root: PathBuf,
    /// Training image folder, relative to `root`.
    pub train: String,
    /// Validation image folder, relative to `root`.
    pub val: String,
    /// Class names.
    pub names: Vec<String>,
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    let stripped = s
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')));
    stripped.unwrap_or(s).to_string()
}

/// Removes a `#` comment that is not inside quotes.
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || line[..i].ends_with(char::is_whitespace)) => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Parses the `data.yaml` subset; `yaml_path` names the file in errors and anchors relative roots.
pub fn parse_data_yaml(text: &str, yaml_path: &Path) -> Result<DataYaml> {
    let bad = |line: usize, msg: String| DetectError::Invalid(format!("{}:{line}: {msg}", yaml_path.display()));
    let base = yaml_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let (mut root, mut train, mut val, mut nc) = (None, None, None, None);
    let mut names: Option<Vec<(usize, String)>> = None;
    let mut in_names = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = strip_comment(raw).trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if in_names && indented {
            let item = line.trim();
            let list = names.get_or_insert_with(Vec::new);
            if let Some(v) = item.strip_prefix("- ").or_else(|| (item == "-").then_some("")) {
                list.push((list.len(), unquote(v)));
            } else if let Some((k, v)) = item.split_once(':') {
                let k: usize = k
                    .trim()
                    .parse()
                    .map_err(|_| bad(line_no, format!("names: expected an integer key, found `{}`", k.trim())))?;
                list.push((k, unquote(v)));
            } else {
                return Err(bad(line_no, format!("names: cannot read `{item}`")));
            }
            continue;
        }
        in_names = false;
        if indented {
            continue; // nested keys we do not use
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(bad(line_no, format!("expected `key: value`, found `{line}`")));
        };
        let value = value.trim();
        match key.trim() {
            "path" => root = Some(unquote(value)),
            "train" => train = Some(unquote(value)),
            "val" => val = Some(unquote(value)),
            "nc" => {
                nc = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad(line_no, format!("nc: expected an integer, found `{value}`")))?,
                )
            }
            "names" if value.is_empty() => in_names = true,
            "names" => {
                let inner = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .ok_or_else(|| bad(line_no, format!("names: expected a list `[a, b]`, found `{value}`")))?;
                names =
                    Some(inner.split(',').map(str::trim).filter(|s| !s.is_empty()).map(unquote).enumerate().collect());
            }
            _ => {}
        }
    }
    let mut names = names.ok_or_else(|| bad(0, "no `names`".into()))?;
    names.sort_by_key(|(k, _)| *k);
    if names.iter().enumerate().any(|(i, (k, _))| i != *k) {
        return Err(bad(0, "names: keys must be 0, 1, 2, ... without gaps".into()));
    }
    let names: Vec<String> = names.into_iter().map(|(_, n)| n).collect();
    if let Some(nc) = nc.filter(|&n| n != names.len()) {
        return Err(bad(0, format!("nc = {nc} but {} names are given", names.len())));
    }
    let root = match root {
        Some(r) if Path::new(&r).is_absolute() => PathBuf::from(r),
        Some(r) => base.join(r),
        None => base,
    };
    Ok(DataYaml {
        root,
        train: train.ok_or_else(|| bad(0, "no `train`".into()))?,
        val: val.ok_or_else(|| bad(0, "no `val`".into()))?,
        names,
    })
}

/// Writes a `data.yaml` with `path: .`, the two splits and the names.
pub fn data_yaml_text(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{}'", n.replace('\'', "''"))).collect();
    format!("path: .\ntrain: images/train\nval: images/val\nnc: {}\nnames: [{}]\n", names.len(), quoted.join(", "))
}

/// Parses one label file's text; `path` names it in messages. Bad lines are dropped and reported.
pub fn parse_labels(
    text: &str,
    path: &Path,
    (width, height): (u32, u32),
    num_classes: usize,
    issues: &mut Issues,
) -> Vec<Object> {
    let (w, h) = (width as f64, height as f64);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 {
            issues.drop_box(format!("{at}: expected 5 fields `class cx cy w h`, found {}", fields.len()));
            continue;
        }
        let Ok(class) = fields[0].parse::<usize>() else {
            issues.drop_box(format!("{at}: class id `{}` is not a non-negative integer", fields[0]));
            continue;
        };
        if class >= num_classes {
            issues.drop_box(format!("{at}: unknown class id {class} (the data set has {num_classes} classes)"));
            continue;
        }
        let nums: Vec<Option<f64>> = fields[1..].iter().map(|f| f.parse::<f64>().ok()).collect();
        let (cx, cy, bw, bh) = match nums.as_slice() {
            [Some(a), Some(b), Some(c), Some(d)] if [a, b, c, d].iter().all(|v| v.is_finite()) => (*a, *b, *c, *d),
            _ => {
                issues.drop_box(format!("{at}: coordinates must be finite numbers, found `{}`", fields[1..].join(" ")));
                continue;
            }
        };
        if !(0.0..=1.0).contains(&cx) || !(0.0..=1.0).contains(&cy) || bw <= 0.0 || bh <= 0.0 || bw > 1.0 || bh > 1.0 {
            issues.drop_box(format!(
                "{at}: normalised box {cx} {cy} {bw} {bh} is out of range (centre in 0..1, size in (0, 1])"
            ));
            continue;
        }
        let b = [(cx - bw / 2.0) * w, (cy - bh / 2.0) * h, (cx + bw / 2.0) * w, (cy + bh / 2.0) * h];
        match check_box(b, w, h, MIN_SIDE) {
            Ok(bbox) => out.push(Object { class, bbox }),
            Err(msg) => issues.drop_box(format!("{at}: {msg}")),
        }
    }
    out
}

/// Label text for objects of an image (`class cx cy w h`, 6 decimals).
pub fn label_text(objects: &[Object], width: u32, height: u32) -> String {
    let (w, h) = (width as f64, height as f64);
    objects
        .iter()
        .map(|o| {
            let [x1, y1, x2, y2] = o.bbox;
            format!(
                "{} {:.6} {:.6} {:.6} {:.6}\n",
                o.class,
                (x1 + x2) / 2.0 / w,
                (y1 + y2) / 2.0 / h,
                (x2 - x1) / w,
                (y2 - y1) / h
            )
        })
        .collect()
}

/// The label file of an image: the last `images` folder of its path becomes `labels`, the extension `.txt`.
pub fn label_path(image: &Path) -> PathBuf {
    let comps: Vec<_> = image.components().collect();
    let pos = comps.iter().rposition(|c| c.as_os_str() == "images");
    let mut out = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        if Some(i) == pos { out.push("labels") } else { out.push(c.as_os_str()) }
    }
    out.set_extension("txt");
    out
}

/// Reads the images of one split folder and their labels.
pub fn read_split(image_dir: &Path, num_classes: usize) -> Result<(Vec<DetImage>, Issues)> {
    let files = list_images(image_dir)?;
    let results: Vec<(Option<DetImage>, Issues)> = files
        .par_iter()
        .map(|img| {
            let mut issues = Issues::default();
            let (width, height) = match image_size(img) {
                Ok(d) => d,
                Err(e) => {
                    issues.dropped_images += 1;
                    issues.messages.push(e.to_string());
                    return (None, issues);
                }
            };
            let lp = label_path(img);
            let objects = match std::fs::read_to_string(&lp) {
                Ok(text) => parse_labels(&text, &lp, (width, height), num_classes, &mut issues),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    issues.missing_labels += 1;
                    issues.messages.push(format!("{}: missing label file (image kept without objects)", lp.display()));
                    Vec::new()
                }
                Err(e) => {
                    issues.dropped_images += 1;
                    issues.messages.push(format!("{}: {e}", lp.display()));
                    return (None, issues);
                }
            };
            (Some(DetImage { path: img.clone(), width, height, objects }), issues)
        })
        .collect();
    let mut all = Issues::default();
    let mut images = Vec::new();
    for (img, issues) in results {
        all.extend(issues);
        images.extend(img);
    }
    Ok((images, all))
}

/// Reads a YOLO data set from its folder (holding `data.yaml`) or the yaml file itself.
pub fn read_dataset(path: &Path) -> Result<DetDataset> {
    let yaml_path = if path.is_file() { path.to_path_buf() } else { path.join("data.yaml") };
    let text =
        std::fs::read_to_string(&yaml_path).map_err(|source| DetectError::Io { path: yaml_path.clone(), source })?;
    let y = parse_data_yaml(&text, &yaml_path)?;
    let (train, mut issues) = read_split(&y.root.join(&y.train), y.names.len())?;
    let (val, vi) = read_split(&y.root.join(&y.val), y.names.len())?;
    issues.extend(vi);
    Ok(DetDataset { names: y.names, train, val, issues })
}

fn copy_image(src: &Path, dst_dir: &Path) -> Result<PathBuf> {
    let name = src.file_name().ok_or_else(|| DetectError::Invalid(format!("{}: no file name", src.display())))?;
    let dst = dst_dir.join(name);
    std::fs::copy(src, &dst).map_err(|source| DetectError::Io { path: dst.clone(), source })?;
    Ok(dst)
}

/// Writes `ds` in the YOLO layout under `out` (copying the images).
pub fn write_dataset(ds: &DetDataset, out: &Path) -> Result<()> {
    for (split, images) in [("train", &ds.train), ("val", &ds.val)] {
        let (idir, ldir) = (out.join("images").join(split), out.join("labels").join(split));
        for d in [&idir, &ldir] {
            std::fs::create_dir_all(d).map_err(|source| DetectError::Io { path: d.clone(), source })?;
        }
        for im in images.iter() {
            let dst = copy_image(&im.path, &idir)?;
            let lp = label_path(&dst);
            std::fs::write(&lp, label_text(&im.objects, im.width, im.height))
                .map_err(|source| DetectError::Io { path: lp.clone(), source })?;
        }
    }
    let yaml = out.join("data.yaml");
    std::fs::write(&yaml, data_yaml_text(&ds.names)).map_err(|source| DetectError::Io { path: yaml, source })
}

/// Copies one image into `dir` (used by the COCO writer too).
pub(crate) fn copy_into(src: &Path, dir: &Path) -> Result<PathBuf> {
    copy_image(src, dir)
}

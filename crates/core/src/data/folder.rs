//! Indexing classification data sets: the ImageFolder layout `DIR/{train,val,test}/<class>/<image>`
//! and CSV indexes with a `path,label` header. Every layout error names the folder, file or label.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::DataError;

/// Image file extensions indexed (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// One labelled image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// Index into [`ClassDataset::classes`].
    pub label: usize,
}

/// A classification data set split into train, validation and test samples.
#[derive(Clone, Debug, Default)]
pub struct ClassDataset {
    /// Class names, sorted; a label is an index into this list.
    pub classes: Vec<String>,
    /// Training samples.
    pub train: Vec<Sample>,
    /// Validation samples (empty if the split is absent and that was allowed).
    pub val: Vec<Sample>,
    /// Test samples (empty if the split is absent).
    pub test: Vec<Sample>,
    /// Files skipped because their extension is not an image extension.
    pub ignored_files: usize,
}

fn has_image_ext(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn dataset_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Dataset { path: path.to_path_buf(), reason: reason.into() }
}

/// Sorted entries of a directory.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        out.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// Class folders of a split: name -> path, sorted by name.
fn class_dirs(split: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for p in read_dir_sorted(split)? {
        if p.is_dir() {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| dataset_err(&p, "class folder name is not valid UTF-8"))?
                .to_string();
            if !name.starts_with('.') {
                out.push((name, p));
            }
        }
    }
    Ok(out)
}

/// Image files of one class folder (sorted) and the number of other files.
fn class_files(dir: &Path) -> Result<(Vec<PathBuf>, usize), DataError> {
    let mut files = Vec::new();
    let mut ignored = 0;
    for p in read_dir_sorted(dir)? {
        if p.is_file() {
            if has_image_ext(&p) {
                files.push(p);
            } else {
                ignored += 1;
            }
        }
    }
    Ok((files, ignored))
}

/// Indexes `dir/{train,val,test}/<class>/*`. Classes come from `train` (sorted by name). Errors: a
/// missing `train`, an empty train class, a val/test class absent from train, and a missing `val`
/// unless `allow_missing_val`. `test` is optional. Non-image files are counted in `ignored_files`.
pub fn image_folder(dir: impl AsRef<Path>, allow_missing_val: bool) -> Result<ClassDataset, DataError> {
    let dir = dir.as_ref();
    let train_dir = dir.join("train");
    if !train_dir.is_dir() {
        return Err(dataset_err(dir, "no `train` folder (expected train/<class>/<image> and val/<class>/<image>)"));
    }
    let mut ds = ClassDataset::default();
    let train_classes = class_dirs(&train_dir)?;
    if train_classes.is_empty() {
        return Err(dataset_err(&train_dir, "no class folders"));
    }
    ds.classes = train_classes.iter().map(|(n, _)| n.clone()).collect();
    for (label, (_, path)) in train_classes.iter().enumerate() {
        let (files, ignored) = class_files(path)?;
        ds.ignored_files += ignored;
        if files.is_empty() {
            return Err(dataset_err(path, "empty class folder: no jpg/jpeg/png/bmp/webp images"));
        }
        ds.train.extend(files.into_iter().map(|path| Sample { path, label }));
    }
    for split in ["val", "test"] {
        let split_dir = dir.join(split);
        if !split_dir.is_dir() {
            if split == "val" && !allow_missing_val {
                return Err(dataset_err(
                    dir,
                    "no `val` folder (allow a missing validation split to train without one)",
                ));
            }
            continue;
        }
        let mut samples = Vec::new();
        for (name, path) in class_dirs(&split_dir)? {
            let Some(label) = ds.classes.iter().position(|c| *c == name) else {
                return Err(dataset_err(&path, format!("class `{name}` is not among the train classes")));
            };
            let (files, ignored) = class_files(&path)?;
            ds.ignored_files += ignored;
            samples.extend(files.into_iter().map(|path| Sample { path, label }));
        }
        if split == "val" { ds.val = samples } else { ds.test = samples }
    }
    Ok(ds)
}

/// Reads a `path,label` CSV; paths are relative to the CSV's folder.
fn read_csv(csv_path: &Path) -> Result<Vec<(PathBuf, String)>, DataError> {
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut reader = csv::Reader::from_path(csv_path).map_err(|e| dataset_err(csv_path, e.to_string()))?;
    let headers = reader.headers().map_err(|e| dataset_err(csv_path, e.to_string()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(pc), Some(lc)) = (col("path"), col("label")) else {
        return Err(dataset_err(
            csv_path,
            format!(
                "header must have `path` and `label` columns, found `{}`",
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    };
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| dataset_err(csv_path, e.to_string()))?;
        let line = i + 2;
        let (Some(p), Some(l)) = (rec.get(pc), rec.get(lc)) else {
            return Err(dataset_err(csv_path, format!("line {line}: missing path or label")));
        };
        let (p, l) = (p.trim(), l.trim());
        if p.is_empty() || l.is_empty() {
            return Err(dataset_err(csv_path, format!("line {line}: empty path or label")));
        }
        rows.push((base.join(p), l.to_string()));
    }
    Ok(rows)
}

/// Indexes CSV files with a `path,label` header. Classes are the sorted distinct labels of the train
/// CSV; a val or test label not among them is an error naming it and its line's file.
pub fn from_csv(
    train_csv: impl AsRef<Path>,
    val_csv: Option<&Path>,
    test_csv: Option<&Path>,
) -> Result<ClassDataset, DataError> {
    let train_csv = train_csv.as_ref();
    let train = read_csv(train_csv)?;
    if train.is_empty() {
        return Err(dataset_err(train_csv, "no rows"));
    }
    let classes: Vec<String> = train.iter().map(|(_, l)| l.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let to_samples = |rows: Vec<(PathBuf, String)>, csv: &Path| -> Result<Vec<Sample>, DataError> {
        rows.into_iter()
            .map(|(path, l)| match classes.binary_search(&l) {
                Ok(label) => Ok(Sample { path, label }),
                Err(_) => {
                    Err(dataset_err(csv, format!("label `{l}` (for {}) is not among the train labels", path.display())))
                }
            })
            .collect()
    };
    let mut ds = ClassDataset { train: to_samples(train, train_csv)?, ..Default::default() };
    if let Some(v) = val_csv {
        ds.val = to_samples(read_csv(v)?, v)?;
    }
    if let Some(t) = test_csv {
        ds.test = to_samples(read_csv(t)?, t)?;
    }
    ds.classes = classes;
    Ok(ds)
}

//! Deterministic generators of tlcv's embedded classification data sets, built from real images that
//! Debian ships (opencv-doc's handwritten digits and example photos, scikit-image's sample photos).
//!
//! - [`digits::generate`]: the 5000 handwritten digits of opencv-doc's `digits.png`, split into
//!   ImageFolder train/val/test.
//! - [`shapes::generate`]: six classes of rendered shapes with clutter on crops of real photos.
//! - [`detection::generate`]: several shapes and handwritten digits per photo crop, with boxes in the
//!   YOLO layout and COCO JSON.
//!
//! Each generator writes into a caller-given folder: first into `<out>.partial-<pid>-<n>`, then renamed, with a
//! `meta.json` (seed, counts, sources) and a `.done` stamp written last. A folder with `.done` is left
//! alone, so calling again is cheap. The same arguments always give byte-identical files.

pub mod detection;
pub mod digits;
pub mod segmentation;
pub mod shapes;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors from generating a data set.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A required source file (from the Debian data) is missing.
    #[error("missing source file {path} (run `cargo xtask setup` to extract the Debian data)")]
    MissingSource { path: PathBuf },
    /// OpenCV failed on a file or image.
    #[error("{context}: {message}")]
    OpenCv { context: String, message: String },
    /// An argument or existing state is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// `meta.json` could not be read or written.
    #[error("{path}: bad meta.json: {message}")]
    Meta { path: PathBuf, message: String },
}

impl DatasetError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DatasetError::Io { path: path.into(), source }
    }

    fn cv(context: impl Into<String>, e: opencv::Error) -> Self {
        DatasetError::OpenCv { context: context.into(), message: e.message }
    }
}

/// What a generator produced (also the content of `meta.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Data set name (`digits`, `shapes`).
    pub name: String,
    /// Seed the split and rendering were drawn from.
    pub seed: u64,
    /// Class names, which are also the class folder names, in label order.
    pub classes: Vec<String>,
    /// Images per class in train, val and test.
    pub per_class: [usize; 3],
    /// Total images in train.
    pub train: usize,
    /// Total images in val.
    pub val: usize,
    /// Total images in test.
    pub test: usize,
    /// The Debian files the images come from (names relative to the Debian data folder).
    pub sources: Vec<String>,
}

/// The split folder names, in order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Reads the summary of an already generated data set, if its `.done` stamp exists.
pub fn existing(out_dir: &Path) -> Result<Option<Summary>, DatasetError> {
    if !out_dir.join(".done").is_file() {
        return Ok(None);
    }
    let meta = out_dir.join("meta.json");
    let text = std::fs::read_to_string(&meta).map_err(|e| DatasetError::io(&meta, e))?;
    let s = serde_json::from_str(&text).map_err(|e| DatasetError::Meta { path: meta, message: e.to_string() })?;
    Ok(Some(s))
}

/// Runs `fill(partial_dir)` to create a data set, then writes `meta.json` and `.done` and renames
/// the partial folder to `out_dir`. Returns the existing summary if `out_dir` is complete already.
pub(crate) fn build(
    out_dir: &Path,
    fill: impl FnOnce(&Path) -> Result<Summary, DatasetError>,
) -> Result<Summary, DatasetError> {
    if let Some(s) = existing(out_dir)? {
        return Ok(s);
    }
    if out_dir.exists() {
        let empty = std::fs::read_dir(out_dir).map_err(|e| DatasetError::io(out_dir, e))?.next().is_none();
        if !empty {
            return Err(DatasetError::Invalid(format!(
                "{} exists but is not a complete data set (no .done); delete it to regenerate",
                out_dir.display()
            )));
        }
        std::fs::remove_dir(out_dir).map_err(|e| DatasetError::io(out_dir, e))?;
    }
    // One partial folder per process and call: tests and parallel workers may generate the same set at
    // once; whoever renames first wins and the others keep its result.
    let partial = partial_dir(out_dir);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| DatasetError::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| DatasetError::io(&partial, e))?;
    let summary = fill(&partial)?;
    let meta = partial.join("meta.json");
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| DatasetError::Meta { path: meta.clone(), message: e.to_string() })?;
    std::fs::write(&meta, json + "\n").map_err(|e| DatasetError::io(&meta, e))?;
    let done = partial.join(".done");
    std::fs::write(&done, b"").map_err(|e| DatasetError::io(&done, e))?;
    if let Err(e) = std::fs::rename(&partial, out_dir) {
        let _ = std::fs::remove_dir_all(&partial);
        return existing(out_dir)?.ok_or_else(|| DatasetError::io(out_dir, e));
    }
    Ok(summary)
}

/// `<out>.partial-<pid>-<n>`: unique to this process and call.
fn partial_dir(out_dir: &Path) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut partial = out_dir.as_os_str().to_owned();
    partial.push(format!(".partial-{}-{n}", std::process::id()));
    PathBuf::from(partial)
}

/// Creates `dir/<split>/<class>` for every split and class.
pub(crate) fn make_class_dirs(dir: &Path, classes: &[String]) -> Result<(), DatasetError> {
    for split in SPLITS {
        for c in classes {
            let d = dir.join(split).join(c);
            std::fs::create_dir_all(&d).map_err(|e| DatasetError::io(&d, e))?;
        }
    }
    Ok(())
}

/// Mixes numbers into a well-spread seed (splitmix64 finaliser), so that each image's RNG depends
/// only on its coordinates and not on thread timing.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(a << 6).wrapping_add(a >> 2);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

//! Where the project store lives: `.tlcv/` at the workspace root, made by `cargo xtask setup`.
//!
//! Binaries are run from the root, from `target/{debug,release}`, or from tests whose working directory is a
//! crate folder, so the store is found by walking up from the working directory and from the executable.
//! `TLCV_HOME` overrides the search.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Name of the store folder at the workspace root.
pub const STORE_DIR: &str = ".tlcv";

/// The store folder (`.tlcv`), or an error that says how to create it.
pub fn store_dir() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("TLCV_HOME") {
        return Ok(PathBuf::from(home));
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        starts.push(dir.to_path_buf());
    }
    starts.iter().find_map(|start| find_upwards(start, STORE_DIR)).ok_or_else(|| {
        Error::Invalid("no .tlcv store found above the working directory: run `cargo xtask setup`".into())
    })
}

/// The workspace root (the folder that holds `.tlcv`).
pub fn workspace_root() -> Result<PathBuf> {
    let store = store_dir()?;
    Ok(store.parent().map(Path::to_path_buf).unwrap_or(store))
}

/// A file in the model store, e.g. `efficientnet_lite0.pth`; an error naming the file if it is absent.
pub fn model_file(name: &str) -> Result<PathBuf> {
    let path = store_dir()?.join("models").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Invalid(format!("{} is missing: run `cargo xtask setup`", path.display())))
    }
}

/// Folder of the data files extracted from Debian's `python3-skimage` and `opencv-doc`.
pub fn debdata_dir() -> Result<PathBuf> {
    let dir = store_dir()?.join("debdata");
    if dir.join(".done").is_file() {
        Ok(dir)
    } else {
        Err(Error::Invalid(format!("{} is missing: run `cargo xtask setup`", dir.display())))
    }
}

/// A folder of generated test fixtures, `<store>/fixtures/<topic>` (or `$TLCV_FIXTURES/<topic>`), made by
/// `scripts/fixtures/gen_<topic>.py` through `cargo xtask setup --reference`; an error saying so when it
/// is missing or its generator did not finish (no `.done`).
pub fn generated_fixture(topic: &str) -> Result<PathBuf> {
    let root = match std::env::var_os("TLCV_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => store_dir()?.join("fixtures"),
    };
    let dir = root.join(topic);
    if dir.join(".done").is_file() {
        Ok(dir)
    } else {
        Err(Error::Invalid(format!(
            "fixtures missing at {}: run `cargo xtask setup --reference` (scripts/fixtures/gen_{topic}.py)",
            dir.display()
        )))
    }
}

/// Folder for generated embedded data sets (`datasets/generated/<name>`).
pub fn generated_data_dir(name: &str) -> Result<PathBuf> {
    Ok(workspace_root()?.join("datasets").join("generated").join(name))
}

fn find_upwards(start: &Path, name: &str) -> Option<PathBuf> {
    start.ancestors().map(|dir| dir.join(name)).find(|candidate| candidate.is_dir())
}

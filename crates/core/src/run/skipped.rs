//! The files a run could not use, one entry per file with its first reason, shared with the loader's
//! threads: a bad file is reported once however many epochs, views and splits met it. Every task
//! writes them into `metrics.json` the same way ([`SkippedSummary`]).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::Serialize;

/// One skipped file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedFile {
    /// The file.
    pub file: String,
    /// Why it was skipped (without the file name in front).
    pub reason: String,
}

/// The `metrics.json` fields of the skipped files (flattened into the task's metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedSummary {
    /// How many files were skipped.
    pub skipped: usize,
    /// Each of them, sorted by file.
    pub skipped_files: Vec<SkippedFile>,
}

/// Files that failed to load, with their first reason; cheap to clone (the clones share the log).
#[derive(Debug, Clone, Default)]
pub struct SkipLog(Arc<Mutex<BTreeMap<PathBuf, String>>>);

impl SkipLog {
    /// Records that `path` failed with `reason`, a message that names the file (kept only the first
    /// time).
    pub fn record(&self, path: &Path, reason: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.entry(path.to_path_buf()).or_insert_with(|| reason.to_string());
        }
    }

    /// Records every entry of `other`.
    pub fn extend(&self, other: &SkipLog) {
        for (path, reason) in other.entries() {
            self.record(&path, &reason);
        }
    }

    fn entries(&self) -> Vec<(PathBuf, String)> {
        self.0.lock().map(|m| m.iter().map(|(p, r)| (p.clone(), r.clone())).collect()).unwrap_or_default()
    }

    /// The messages (each names its file), sorted by file.
    pub fn reasons(&self) -> Vec<String> {
        self.0.lock().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Number of distinct files recorded.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Prints `skipped: <message>` on stderr for every file.
    pub fn print(&self) {
        for reason in self.reasons() {
            eprintln!("skipped: {reason}");
        }
    }

    /// The `metrics.json` fields.
    pub fn summary(&self) -> SkippedSummary {
        let skipped_files: Vec<SkippedFile> = self
            .entries()
            .into_iter()
            .map(|(path, message)| {
                let file = path.display().to_string();
                let reason = message.strip_prefix(&format!("{file}: ")).unwrap_or(&message).to_string();
                SkippedFile { file, reason }
            })
            .collect();
        SkippedSummary { skipped: skipped_files.len(), skipped_files }
    }

    /// `message` with how many files were skipped and one of them, for an error caused by unusable
    /// data (unchanged when nothing was skipped).
    pub fn explain(&self, message: &str) -> String {
        match self.reasons().first() {
            Some(first) => format!("{message} ({} files skipped, e.g. {first})", self.len()),
            None => message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_per_file_sorted_with_the_file_split_off() {
        let log = SkipLog::default();
        log.record(Path::new("b.jpg"), "b.jpg: cannot decode");
        log.record(Path::new("a.png"), "a.png: too large");
        log.clone().record(Path::new("b.jpg"), "b.jpg: again");
        assert_eq!(log.len(), 2);
        assert_eq!(log.reasons(), ["a.png: too large", "b.jpg: cannot decode"]);
        let s = log.summary();
        assert_eq!(s.skipped, 2);
        assert_eq!(s.skipped_files[1], SkippedFile { file: "b.jpg".into(), reason: "cannot decode".into() });
        let json = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(json["skipped_files"][0]["reason"], "too large");
        assert_eq!(log.explain("no sample"), "no sample (2 files skipped, e.g. a.png: too large)");
    }
}

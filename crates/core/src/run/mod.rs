//! The run lifecycle every task shares, so that a task crate keeps only its own step, model, data
//! and figures:
//!
//! 1. [`configure_threads`] once, then [`RunDir::create_or_resume`] (`runs/<task>/<name>`);
//! 2. [`write_run_files`]: `config.toml` and `classes.json`, before training;
//! 3. training through [`crate::train::fit`], files that fail to load going to a [`SkipLog`];
//! 4. `metrics.json` with the task's metrics plus [`SkippedSummary`], and `report.html` whose
//!    common sections come from [`report`];
//! 5. [`write_predictions`] on held-out images, and later [`TrainedRun::open`] for `eval`, `predict`
//!    and `compare`.

mod dir;
pub mod report;
mod skipped;
mod trained;

use serde::Serialize;

pub use dir::{RunDir, write_atomic};
pub use skipped::{SkipLog, SkippedFile, SkippedSummary};
pub use trained::{TrainedRun, write_config, write_run_files};

use crate::Result;

/// Sets libtorch's and rayon's thread counts once per process from the available cores, so that
/// decoding and compute share them (see [`crate::data::configure_threads`]).
pub fn configure_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let _ = crate::data::configure_threads(cores);
    });
}

/// Writes held-out predictions to `predictions.jsonl` (one JSON object per line) and prints a
/// `predict: <summary>` line for each; a failed image prints `predict: <error>` and is left out.
pub fn write_predictions<T: Serialize>(
    run: &RunDir,
    results: impl IntoIterator<Item = std::result::Result<(T, String), String>>,
) -> Result<()> {
    let mut lines = String::new();
    for result in results {
        match result {
            Ok((prediction, summary)) => {
                eprintln!("predict: {summary}");
                let line = serde_json::to_string(&prediction)
                    .map_err(|e| crate::Error::Invalid(format!("cannot serialise a prediction: {e}")))?;
                lines += &(line + "\n");
            }
            Err(e) => eprintln!("predict: {e}"),
        }
    }
    write_atomic(&run.predictions_jsonl(), lines.as_bytes())
}

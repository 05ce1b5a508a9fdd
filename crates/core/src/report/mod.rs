//! Plots, `results.csv` and the self-contained `report.html` of a run.
//!
//! - [`plots`]: PNG line plots, precision-recall curves, bar charts, confusion matrices and
//!   captioned image grids (plotters, bitmap backend).
//! - [`html`]: the [`Report`] builder writing one self-contained HTML page.
//! - [`results_csv`]: the per-epoch CSV, appended as training goes and read back for plotting.
//! - [`style`]: font loading (plot text needs a TTF at runtime) and the shared look.

use std::path::{Path, PathBuf};

mod confusion;
pub mod html;
mod image_grid;
pub mod plots;
pub mod results_csv;
pub mod style;

pub use html::{Figure, Report, Section};
pub use plots::{
    LineOptions, Series, Tile, bar_plot, bar_plot_sized, confusion_matrix, confusion_matrix_sized, image_grid,
    image_grid_size, line_plot, line_plot_with, pr_curves, pr_curves_sized,
};
pub use results_csv::{ResultsCsv, ResultsTable, Value};
pub use style::{FontStatus, font_status};

/// Errors from drawing plots, writing reports or reading and writing `results.csv`.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// plotters failed to draw or save an image.
    #[error("drawing {path}: {message}")]
    Plot {
        /// The image being drawn.
        path: PathBuf,
        /// plotters' message.
        message: String,
    },
    /// A results CSV is malformed or a row does not match its header.
    #[error("results csv: {0}")]
    Csv(String),
    /// The input cannot be drawn or rendered (sizes, shapes, ids); the message says why.
    #[error("{0}")]
    Invalid(String),
}

impl ReportError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        ReportError::Io { path: path.as_ref().to_path_buf(), source }
    }
}

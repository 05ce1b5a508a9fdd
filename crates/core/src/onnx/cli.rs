//! The `export` subcommand's flags, the same in every task binary, and where the file goes.

use std::path::{Path, PathBuf};

use super::{DEFAULT_OPSET, ExportOptions};

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// ONNX (opsets 13 to 21).
    #[default]
    Onnx,
}

/// Flags of `<task> export`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The trained run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Onnx)]
    pub format: Format,
    /// ONNX opset (13 to 21).
    #[arg(long, default_value_t = DEFAULT_OPSET)]
    pub opset: i64,
    /// A symbolic batch dimension instead of a fixed batch of 1.
    #[arg(long)]
    pub dynamic_batch: bool,
    /// Input size in pixels (square; default: the run's).
    #[arg(long)]
    pub img_size: Option<i64>,
    /// Store the weights and run the network in float16 (input and outputs stay float32).
    #[arg(long)]
    pub half: bool,
    /// Output file (default: RUN_DIR/weights/best.onnx).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl ExportArgs {
    /// The export options for a run trained at `run_img_size`.
    pub fn options(&self, run_img_size: i64) -> crate::Result<ExportOptions> {
        let size = self.img_size.unwrap_or(run_img_size);
        if !(8..=8192).contains(&size) {
            return Err(crate::Error::Invalid(format!("--img-size must be between 8 and 8192, got {size}")));
        }
        if !super::graph::OPSETS.contains(&self.opset) {
            return Err(crate::Error::Invalid(format!(
                "--opset {}: tlcv writes opsets {} to {}",
                self.opset,
                super::graph::OPSETS.start(),
                super::graph::OPSETS.end()
            )));
        }
        Ok(ExportOptions {
            opset: self.opset,
            dynamic_batch: self.dynamic_batch,
            img_size: Some((size, size)),
            half: self.half,
        })
    }

    /// Where the file goes.
    pub fn out_path(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| self.run.join("weights").join("best.onnx"))
    }
}

/// Writes `model` to `path` and says so on stderr with the file's size.
pub fn write_and_report(model: &tract_onnx::pb::ModelProto, path: &Path) -> crate::Result<()> {
    super::save(model, path)?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
    eprintln!(
        "wrote {} ({:.1} MB, {nodes} nodes, opset {})",
        path.display(),
        bytes as f64 / 1e6,
        model.opset_import.first().map_or(0, |o| o.version)
    );
    Ok(())
}

//! `results.csv`: one row per epoch, appended (and flushed) as training goes, so that a crash
//! loses nothing and a resumed run can re-plot its whole history.
//!
//! The header comes from the first row's keys (or from the file, when it already exists); later
//! rows must use the same keys, in any order, and may leave some out (written as empty cells).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::ReportError;
use super::plots::Series;

/// A cell value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer (epoch, step, image count).
    Int(i64),
    /// A number, written with full round-trip precision.
    Float(f64),
    /// Free text (phase name, checkpoint file).
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            // `{}` on f64 is the shortest text that parses back to the same value.
            Value::Float(v) => write!(f, "{v}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

/// Appends rows to a results CSV. Create with [`ResultsCsv::open`].
#[derive(Debug)]
pub struct ResultsCsv {
    path: PathBuf,
    header: Option<Vec<String>>,
}

impl ResultsCsv {
    /// Opens `path` for appending; an existing file's header is kept (resume), a missing file is
    /// created on the first [`append`](Self::append).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ReportError> {
        let path = path.into();
        let header = if path.exists() {
            let table = ResultsTable::read(&path)?;
            (!table.headers.is_empty()).then_some(table.headers)
        } else {
            None
        };
        Ok(ResultsCsv { path, header })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Column names, once known.
    pub fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    /// Appends one row (writing the header first when the file is new) and flushes it.
    /// Keys must be unique and, after the first row, be columns of the header.
    pub fn append<K: AsRef<str>>(&mut self, row: &[(K, Value)]) -> Result<(), ReportError> {
        let keys: Vec<&str> = row.iter().map(|(k, _)| k.as_ref()).collect();
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(ReportError::Csv(format!("{}: column {k:?} given twice in one row", self.path.display())));
            }
        }
        let new_file = self.header.is_none();
        let header: Vec<String> = match &self.header {
            Some(h) => h.clone(),
            None => keys.iter().map(|k| k.to_string()).collect(),
        };
        if let Some(k) = keys.iter().find(|k| !header.iter().any(|h| h == *k)) {
            return Err(ReportError::Csv(format!(
                "{}: column {k:?} is not in the header ({}); results.csv keeps the first row's columns",
                self.path.display(),
                header.join(", ")
            )));
        }
        let cells: Vec<String> = header
            .iter()
            .map(|h| row.iter().find(|(k, _)| k.as_ref() == h).map(|(_, v)| v.to_string()).unwrap_or_default())
            .collect();

        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        if new_file {
            w.write_record(&header).map_err(|e| ReportError::Csv(e.to_string()))?;
        }
        w.write_record(&cells).map_err(|e| ReportError::Csv(e.to_string()))?;
        let bytes = w.into_inner().map_err(|e| ReportError::Csv(e.to_string()))?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| ReportError::io(&self.path, e))?;
        file.write_all(&bytes).map_err(|e| ReportError::io(&self.path, e))?;
        file.flush().map_err(|e| ReportError::io(&self.path, e))?;
        self.header = Some(header);
        Ok(())
    }

    /// Drops rows whose `column` is greater than `max` (or not a number), rewriting the file. A
    /// resumed run calls this with the epoch of its checkpoint, so rows from epochs that will be
    /// redone are not duplicated.
    pub fn retain_through(&mut self, column: &str, max: f64) -> Result<usize, ReportError> {
        if !self.path.exists() {
            return Ok(0);
        }
        let table = ResultsTable::read(&self.path)?;
        let idx = table
            .column_index(column)
            .ok_or_else(|| ReportError::Csv(format!("{}: no column {column:?}", self.path.display())))?;
        let kept: Vec<&Vec<String>> = table
            .rows
            .iter()
            .filter(|r| r.get(idx).and_then(|c| c.trim().parse::<f64>().ok()).is_some_and(|v| v <= max))
            .collect();
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        let csv_err = |e: csv::Error| ReportError::Csv(e.to_string());
        w.write_record(&table.headers).map_err(csv_err)?;
        for r in &kept {
            w.write_record(*r).map_err(csv_err)?;
        }
        let bytes = w.into_inner().map_err(|e| ReportError::Csv(e.to_string()))?;
        let tmp = self.path.with_extension("csv.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| ReportError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| ReportError::io(&self.path, e))?;
        Ok(table.rows.len() - kept.len())
    }
}

/// A results CSV read back: header and text cells, with numeric views for plotting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultsTable {
    /// Column names.
    pub headers: Vec<String>,
    /// Rows of cells, each as long as `headers`.
    pub rows: Vec<Vec<String>>,
}

impl ResultsTable {
    /// Reads `path` (first line = header). Short rows are padded with empty cells.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_path(path)
            .map_err(|e| ReportError::Csv(format!("{}: {e}", path.display())))?;
        let headers: Vec<String> = r
            .headers()
            .map_err(|e| ReportError::Csv(format!("{}: {e}", path.display())))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut rows = Vec::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| ReportError::Csv(format!("{}: {e}", path.display())))?;
            if rec.len() > headers.len() {
                return Err(ReportError::Csv(format!(
                    "{}: line {} has {} cells for {} columns",
                    path.display(),
                    rec.position().map_or(0, |p| p.line()),
                    rec.len(),
                    headers.len()
                )));
            }
            let mut row: Vec<String> = rec.iter().map(str::to_string).collect();
            row.resize(headers.len(), String::new());
            rows.push(row);
        }
        Ok(ResultsTable { headers, rows })
    }

    /// Index of column `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// Column `name` as numbers (`None` for empty or non-numeric cells); `None` if no such column.
    pub fn column(&self, name: &str) -> Option<Vec<Option<f64>>> {
        let i = self.column_index(name)?;
        Some(self.rows.iter().map(|r| r[i].trim().parse::<f64>().ok()).collect())
    }

    /// `y` against `x`, keeping rows where both are numbers; named after `y`.
    pub fn series(&self, x: &str, y: &str) -> Option<Series> {
        let xs = self.column(x)?;
        let ys = self.column(y)?;
        let points = xs.into_iter().zip(ys).filter_map(|(a, b)| Some((a?, b?))).collect();
        Some(Series::new(y, points))
    }

    /// Every numeric column other than `x` as a series against `x` (columns with at least one
    /// number), in header order.
    pub fn all_series(&self, x: &str) -> Vec<Series> {
        self.headers
            .iter()
            .filter(|h| h.as_str() != x)
            .filter_map(|h| self.series(x, h))
            .filter(|s| !s.points.is_empty())
            .collect()
    }
}

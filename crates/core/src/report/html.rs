//! The self-contained `report.html`: one file, inline CSS, every image inlined as a base64 PNG,
//! no scripts and no external resources, so it opens anywhere and can be mailed or archived alone.
//!
//! Stable hooks for tools and tests: every image is `<img class="plot" data-name="...">`, the
//! metrics table is `<table id="metrics">`, the configuration is `<pre id="config">`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::ReportError;

/// One block of a [`Report`], rendered in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Section {
    /// A section title (`<h2>`), also listed in the page's table of contents.
    Heading(String),
    /// A paragraph of plain text.
    Paragraph(String),
    /// A two-column table of names and values (run facts: model, dataset, device, timings).
    KeyValues(Vec<(String, String)>),
    /// A table; `id` becomes the element id (the metrics table uses `"metrics"`).
    Table {
        /// Element id, if any (letters, digits, `-` and `_`).
        id: Option<String>,
        /// Column headers.
        headers: Vec<String>,
        /// Rows of cells; numeric cells are right-aligned.
        rows: Vec<Vec<String>>,
    },
    /// One full-width image (e.g. a sample grid).
    Image {
        /// Caption, also the image's `data-name`.
        title: String,
        /// PNG file to inline.
        png_path: PathBuf,
    },
    /// Several images side by side in a responsive grid (e.g. the plots).
    Images(Vec<Figure>),
    /// Preformatted text (e.g. the resolved configuration); `id` becomes the `<pre>` id.
    Code {
        /// Element id, if any (the configuration uses `"config"`).
        id: Option<String>,
        /// Caption above the block.
        title: String,
        /// The text, shown verbatim.
        text: String,
    },
}

/// An image of a [`Section::Images`] grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Caption, also the image's `data-name`.
    pub title: String,
    /// PNG file to inline.
    pub png_path: PathBuf,
}

impl Figure {
    /// A captioned PNG.
    pub fn new(title: impl Into<String>, png_path: impl Into<PathBuf>) -> Self {
        Figure { title: title.into(), png_path: png_path.into() }
    }
}

/// A run report under construction; [`Report::write`] renders it to one HTML file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Page title and header (usually the run name).
    pub title: String,
    /// Line under the title (e.g. task, model and dataset).
    pub subtitle: Option<String>,
    /// Blocks in page order.
    pub sections: Vec<Section>,
}

impl Report {
    /// An empty report titled `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Report { title: title.into(), subtitle: None, sections: Vec::new() }
    }

    /// Sets the line under the title.
    pub fn subtitle(mut self, s: impl Into<String>) -> Self {
        self.subtitle = Some(s.into());
        self
    }

    /// Appends a section.
    pub fn push(&mut self, section: Section) -> &mut Self {
        self.sections.push(section);
        self
    }

    /// Appends a section title.
    pub fn heading(mut self, s: impl Into<String>) -> Self {
        self.sections.push(Section::Heading(s.into()));
        self
    }

    /// Appends a paragraph.
    pub fn paragraph(mut self, s: impl Into<String>) -> Self {
        self.sections.push(Section::Paragraph(s.into()));
        self
    }

    /// Appends a name/value table.
    pub fn key_values<K: Into<String>, V: Into<String>>(mut self, pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        self.sections.push(Section::KeyValues(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect()));
        self
    }

    /// Appends a table without id.
    pub fn table(mut self, headers: Vec<String>, rows: Vec<Vec<String>>) -> Self {
        self.sections.push(Section::Table { id: None, headers, rows });
        self
    }

    /// Appends the metrics table (`<table id="metrics">`).
    pub fn metrics_table(mut self, headers: Vec<String>, rows: Vec<Vec<String>>) -> Self {
        self.sections.push(Section::Table { id: Some("metrics".into()), headers, rows });
        self
    }

    /// Appends one full-width image.
    pub fn image(mut self, title: impl Into<String>, png_path: impl Into<PathBuf>) -> Self {
        self.sections.push(Section::Image { title: title.into(), png_path: png_path.into() });
        self
    }

    /// Appends a grid of images.
    pub fn images(mut self, figures: Vec<Figure>) -> Self {
        self.sections.push(Section::Images(figures));
        self
    }

    /// Appends the configuration block (`<pre id="config">`).
    pub fn config(mut self, text: impl Into<String>) -> Self {
        self.sections.push(Section::Code {
            id: Some("config".into()),
            title: "Configuration".into(),
            text: text.into(),
        });
        self
    }

    /// Appends a preformatted block without id.
    pub fn code(mut self, title: impl Into<String>, text: impl Into<String>) -> Self {
        self.sections.push(Section::Code { id: None, title: title.into(), text: text.into() });
        self
    }

    /// Renders the page, reading and inlining every image.
    pub fn render(&self) -> Result<String, ReportError> {
        let mut ids = Ids::default();
        let mut body = String::new();
        let mut toc = Vec::new();
        for section in &self.sections {
            render_section(section, &mut body, &mut ids, &mut toc)?;
        }
        let mut page = String::with_capacity(body.len() + 8192);
        let title = escape(&self.title);
        let _ = write!(
            page,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
             <header class=\"hero\"><div class=\"wrap\"><p class=\"kicker\">tlcv run report</p>\
             <h1 id=\"run-title\">{title}</h1>"
        );
        if let Some(sub) = &self.subtitle {
            let _ = write!(page, "<p class=\"subtitle\">{}</p>", escape(sub));
        }
        if toc.len() > 1 {
            page.push_str("<nav class=\"toc\">");
            for (id, text) in &toc {
                let _ = write!(page, "<a href=\"#{id}\">{}</a>", escape(text));
            }
            page.push_str("</nav>");
        }
        page.push_str("</div></header>\n<main class=\"wrap\">\n");
        let has_images = self.sections.iter().any(|s| matches!(s, Section::Image { .. } | Section::Images(_)));
        if has_images && let super::style::FontStatus::Missing(msg) = super::style::font_status() {
            let _ = writeln!(page, "<p class=\"notice\">{}</p>", escape(msg));
        }
        page.push_str(&body);
        page.push_str(
            "</main>\n<footer class=\"wrap\">Generated by tlcv. This page is self-contained: \
                       images are embedded, nothing is loaded from elsewhere.</footer>\n</body>\n</html>\n",
        );
        Ok(page)
    }

    /// Renders the page and writes it to `path` (through a temporary file, so a reader never sees
    /// half a report).
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let html = self.render()?;
        let tmp = path.with_extension("html.tmp");
        std::fs::write(&tmp, html).map_err(|e| ReportError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| ReportError::io(path, e))
    }
}

/// Element ids handed out so far (headings get unique slugs; explicit ids must be unique).
#[derive(Default)]
struct Ids(HashSet<String>);

impl Ids {
    fn explicit(&mut self, id: &str) -> Result<String, ReportError> {
        let ok = !id.is_empty()
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && id.starts_with(|c: char| c.is_ascii_alphabetic());
        if !ok {
            return Err(ReportError::Invalid(format!(
                "report element id {id:?} must start with a letter and use only letters, digits, '-' and '_'"
            )));
        }
        if !self.0.insert(id.to_string()) {
            return Err(ReportError::Invalid(format!("report element id {id:?} is used twice")));
        }
        Ok(id.to_string())
    }

    fn slug(&mut self, text: &str) -> String {
        let mut base = String::from("sec-");
        for c in text.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_alphanumeric() {
                base.push(c);
            } else if !base.ends_with('-') {
                base.push('-');
            }
        }
        let base = base.trim_end_matches('-').to_string();
        let mut id = base.clone();
        let mut k = 2;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{k}");
            k += 1;
        }
        id
    }
}

fn render_section(
    section: &Section,
    out: &mut String,
    ids: &mut Ids,
    toc: &mut Vec<(String, String)>,
) -> Result<(), ReportError> {
    match section {
        Section::Heading(text) => {
            let id = ids.slug(text);
            let _ = writeln!(out, "<h2 id=\"{id}\">{}</h2>", escape(text));
            toc.push((id, text.clone()));
        }
        Section::Paragraph(text) => {
            let _ = writeln!(out, "<p>{}</p>", escape(text));
        }
        Section::KeyValues(pairs) => {
            out.push_str("<dl class=\"kv\">");
            for (k, v) in pairs {
                let _ = write!(out, "<div><dt>{}</dt><dd>{}</dd></div>", escape(k), escape(v));
            }
            out.push_str("</dl>\n");
        }
        Section::Table { id, headers, rows } => {
            let id_attr = match id {
                Some(id) => format!(" id=\"{}\"", ids.explicit(id)?),
                None => String::new(),
            };
            let _ = write!(out, "<div class=\"table-wrap\"><table{id_attr} class=\"data\"><thead><tr>");
            for h in headers {
                let _ = write!(out, "<th>{}</th>", escape(h));
            }
            out.push_str("</tr></thead><tbody>");
            for row in rows {
                out.push_str("<tr>");
                for cell in row {
                    let class = if looks_numeric(cell) { " class=\"num\"" } else { "" };
                    let _ = write!(out, "<td{class}>{}</td>", escape(cell));
                }
                out.push_str("</tr>");
            }
            out.push_str("</tbody></table></div>\n");
        }
        Section::Image { title, png_path } => {
            let _ = writeln!(out, "<figure class=\"wide\">{}</figure>", img_tag(title, png_path)?);
        }
        Section::Images(figures) => {
            out.push_str("<div class=\"plots\">");
            for f in figures {
                let _ = write!(out, "<figure>{}</figure>", img_tag(&f.title, &f.png_path)?);
            }
            out.push_str("</div>\n");
        }
        Section::Code { id, title, text } => {
            let id_attr = match id {
                Some(id) => format!(" id=\"{}\"", ids.explicit(id)?),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "<div class=\"code\"><div class=\"code-title\">{}</div><pre{id_attr}>{}</pre></div>",
                escape(title),
                escape(text)
            );
        }
    }
    Ok(())
}

/// `<img class="plot">` with the PNG inlined and a caption; the file must be a PNG.
fn img_tag(title: &str, png_path: &Path) -> Result<String, ReportError> {
    let data_uri = png_data_uri(png_path)?;
    let name = if title.is_empty() {
        png_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        title.to_string()
    };
    let (w, h) = png_size(png_path)?;
    Ok(format!(
        "<img class=\"plot\" data-name=\"{n}\" alt=\"{n}\" width=\"{w}\" height=\"{h}\" src=\"{data_uri}\"><figcaption>{n}</figcaption>",
        n = escape(&name)
    ))
}

const PNG_MAGIC: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// `data:image/png;base64,...` for the PNG at `path`.
pub fn png_data_uri(path: &Path) -> Result<String, ReportError> {
    let bytes = std::fs::read(path).map_err(|e| ReportError::io(path, e))?;
    if !bytes.starts_with(PNG_MAGIC) {
        return Err(ReportError::Invalid(format!(
            "{}: not a PNG file, cannot inline it in the report",
            path.display()
        )));
    }
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes)))
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(path: &Path) -> Result<(u32, u32), ReportError> {
    let bytes = std::fs::read(path).map_err(|e| ReportError::io(path, e))?;
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
        return Err(ReportError::Invalid(format!("{}: PNG without an IHDR header", path.display())));
    }
    Ok((be(&bytes[16..20]), be(&bytes[20..24])))
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Numbers (also percentages and `±` spreads) get right-aligned cells.
fn looks_numeric(s: &str) -> bool {
    let t = s.trim().trim_end_matches('%');
    let t = t.split('±').next().unwrap_or("").trim();
    !t.is_empty() && t.parse::<f64>().is_ok()
}

const CSS: &str = r#"
:root{--ink:#1f2328;--muted:#59636e;--line:#d8dee4;--soft:#f6f8fa;--accent:#1f77b4;--hero:#0d2b45}
*{box-sizing:border-box}
html{font-size:15px}
body{margin:0;color:var(--ink);background:#fff;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","DejaVu Sans",Arial,sans-serif;line-height:1.55}
.wrap{max-width:1240px;margin:0 auto;padding:0 28px}
.hero{background:linear-gradient(135deg,var(--hero),#1b4f72);color:#fff;padding:30px 0 22px;margin-bottom:10px}
.hero .kicker{margin:0;text-transform:uppercase;letter-spacing:.12em;font-size:.75rem;opacity:.75}
.hero h1{margin:4px 0 2px;font-size:2rem;font-weight:650;letter-spacing:-.01em;word-break:break-word}
.hero .subtitle{margin:0;opacity:.85;font-size:1.05rem}
.toc{margin-top:16px;display:flex;flex-wrap:wrap;gap:6px}
.toc a{color:#fff;text-decoration:none;font-size:.85rem;padding:3px 10px;border:1px solid rgba(255,255,255,.35);border-radius:999px}
.toc a:hover{background:rgba(255,255,255,.12)}
main{padding-bottom:24px}
h2{font-size:1.3rem;font-weight:650;margin:34px 0 12px;padding-bottom:6px;border-bottom:2px solid var(--soft)}
p{margin:8px 0 12px;max-width:80ch}
.notice{background:#fff8e1;border:1px solid #f0d58c;border-radius:6px;padding:8px 12px;max-width:none}
dl.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:8px;margin:0 0 12px}
dl.kv div{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:8px 12px}
dl.kv dt{font-size:.75rem;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
dl.kv dd{margin:2px 0 0;font-weight:600;word-break:break-word}
.table-wrap{overflow-x:auto;border:1px solid var(--line);border-radius:8px;margin:0 0 14px}
table.data{border-collapse:collapse;width:100%;font-size:.92rem}
table.data th{background:var(--soft);text-align:left;font-weight:650;padding:8px 12px;border-bottom:1px solid var(--line);white-space:nowrap}
table.data td{padding:6px 12px;border-bottom:1px solid #eef1f4}
table.data tbody tr:nth-child(even){background:#fbfcfd}
table.data tbody tr:last-child td{border-bottom:none}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.88rem}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:18px;margin:0 0 14px}
figure{margin:0 0 14px;background:#fff;border:1px solid var(--line);border-radius:10px;padding:10px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
figure img{display:block;width:100%;height:auto}
figure.wide img{width:auto;max-width:100%;margin:0 auto}
figcaption{text-align:center;color:var(--muted);font-size:.85rem;margin-top:6px}
.code{border:1px solid var(--line);border-radius:8px;overflow:hidden;margin:0 0 14px}
.code-title{background:var(--soft);border-bottom:1px solid var(--line);padding:6px 12px;font-size:.8rem;color:var(--muted);text-transform:uppercase;letter-spacing:.06em}
pre{margin:0;padding:12px 14px;overflow-x:auto;font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.85rem;line-height:1.5;background:#fcfdfe}
footer{color:var(--muted);font-size:.8rem;border-top:1px solid var(--line);padding:14px 28px 30px}
@media print{.hero{background:none;color:var(--ink)}.toc{display:none}figure{break-inside:avoid}}
"#;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(escape("plain ü text"), "plain ü text");
    }

    #[test]
    fn numeric_cells() {
        for s in ["0.5", "-3", "12.5%", "0.81 ± 0.02", "1e-4"] {
            assert!(looks_numeric(s), "{s}");
        }
        for s in ["", "cat", "epoch 3", "%"] {
            assert!(!looks_numeric(s), "{s}");
        }
    }

    #[test]
    fn heading_slugs_are_unique_and_explicit_ids_checked() {
        let mut ids = Ids::default();
        assert_eq!(ids.slug("Loss & Metrics"), "sec-loss-metrics");
        assert_eq!(ids.slug("Loss & Metrics"), "sec-loss-metrics-2");
        assert_eq!(ids.explicit("metrics").unwrap(), "metrics");
        assert!(ids.explicit("metrics").is_err());
        assert!(ids.explicit("bad id\"").is_err());
        assert!(ids.explicit("1abc").is_err());
    }
}

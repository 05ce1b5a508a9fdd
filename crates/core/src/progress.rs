//! Progress display: an indicatif bar on an interactive stderr, plain one-line summaries otherwise.
//!
//! Logs (CI, `nohup`, redirected stderr) should not fill up with bar redraws, so when stderr is
//! not a terminal no bar is drawn: a phase prints one heartbeat line per minute while it runs (so a
//! long phase is never silent) and [`Progress::finish`] prints one line when it ends. On a terminal the bar shows position, rate, ETA and the per-step message
//! (loss, images/s), and is replaced by the same one-line summary when finished.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    Auto,
    /// Always a bar (drawn to stderr).
    Bar,
    /// Plain summary lines on stderr, no bar.
    Plain,
    /// Nothing printed; [`Progress::finish`] still returns the summary line.
    Hidden,
}

impl Mode {
    /// `Auto` resolved against the current stderr.
    fn resolve(self) -> Mode {
        match self {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Bar,
            Mode::Auto => Mode::Plain,
            m => m,
        }
    }
}

/// A progress display for one phase (an epoch, an evaluation pass, a download).
pub struct Progress {
    bar: Option<ProgressBar>,
    mode: Mode,
    label: String,
    len: Option<u64>,
    pos: AtomicU64,
    message: Mutex<String>,
    start: Instant,
    finished: AtomicBool,
    /// Plain mode: the least time between two heartbeat lines.
    heartbeat_every: Duration,
    /// Milliseconds after `start` of the last heartbeat line.
    last_heartbeat_ms: AtomicU64,
}

/// How often a plain-mode phase says where it is.
const HEARTBEAT: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("mode", &self.mode)
            .field("label", &self.label)
            .field("len", &self.len)
            .field("pos", &self.position())
            .finish()
    }
}

impl Progress {
    /// A bar of `len` steps labelled `label` ([`Mode::Auto`]).
    pub fn new(len: u64, label: impl Into<String>) -> Self {
        Progress::with_mode(Some(len), label, Mode::Auto)
    }

    /// Same as [`Progress::new`].
    pub fn bar(len: u64, label: impl Into<String>) -> Self {
        Progress::new(len, label)
    }

    /// A spinner for work of unknown length ([`Mode::Auto`]).
    pub fn spinner(label: impl Into<String>) -> Self {
        Progress::with_mode(None, label, Mode::Auto)
    }

    /// A display of `len` steps (`None`: unknown, a spinner) in the given mode.
    pub fn with_mode(len: Option<u64>, label: impl Into<String>, mode: Mode) -> Self {
        let label = label.into();
        let mode = mode.resolve();
        let bar = (mode == Mode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr()).with_prefix(label.clone());
            let template = if len.is_some() {
                "{prefix:>12.bold.cyan} [{bar:30.cyan/blue}] {pos:>6}/{len:<6} {per_sec:>10} {elapsed_precise} eta {eta:<4} {msg}"
            } else {
                "{spinner:.cyan} {prefix:.bold.cyan} {pos} done, {per_sec}, {elapsed_precise} {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            if len.is_none() {
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            bar
        });
        Progress {
            bar,
            mode,
            label,
            len,
            pos: AtomicU64::new(0),
            message: Mutex::new(String::new()),
            start: Instant::now(),
            finished: AtomicBool::new(false),
            heartbeat_every: HEARTBEAT,
            last_heartbeat_ms: AtomicU64::new(0),
        }
    }

    /// Sets the least time between two heartbeat lines (plain mode; default one minute).
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat_every = every;
        self
    }

    /// The resolved mode ([`Mode::Auto`] never appears here).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        self.pos.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.mode == Mode::Plain
            && let Some(line) = self.heartbeat()
        {
            eprintln!("{line}");
        }
    }

    /// The heartbeat line when one is due (`label: message (pos/len steps, rate, elapsed, eta …)`),
    /// and marks it given; `None` until `heartbeat_every` has passed since the last one.
    pub fn heartbeat(&self) -> Option<String> {
        let now = self.elapsed();
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_heartbeat_ms.load(Ordering::Relaxed);
        let every = u64::try_from(self.heartbeat_every.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(last) < every
            || self.last_heartbeat_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return None;
        }
        let pos = self.position();
        let mut line = summary_line(&self.label, pos, self.len, now, &self.message());
        if let Some(len) = self.len.filter(|_| pos > 0) {
            let eta = now.mul_f64(len.saturating_sub(pos) as f64 / pos as f64);
            line.pop();
            line.push_str(&format!(", eta {})", format_duration(eta)));
        }
        Some(line)
    }

    /// Sets the per-step message shown after the bar (e.g. `loss 0.4312  412 img/s`).
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(bar) = &self.bar {
            bar.set_message(msg.clone());
        }
        if let Ok(mut m) = self.message.lock() {
            *m = msg;
        }
    }

    /// The last message set.
    pub fn message(&self) -> String {
        self.message.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Steps done so far.
    pub fn position(&self) -> u64 {
        self.pos.load(Ordering::Relaxed)
    }

    /// Time since creation.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Steps per second so far.
    pub fn rate(&self) -> f64 {
        rate(self.position(), self.elapsed())
    }

    /// Prints a line without breaking the bar (plain modes: straight to stderr; hidden: nothing).
    pub fn println(&self, line: impl AsRef<str>) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(line),
            (None, Mode::Hidden) => {}
            (None, _) => eprintln!("{}", line.as_ref()),
        }
    }

    /// Ends the phase: removes the bar and prints one summary line (label, `summary`, steps and
    /// time), which is also returned. A second call prints nothing and returns the same text.
    pub fn finish(&self, summary: impl AsRef<str>) -> String {
        let line = summary_line(&self.label, self.position(), self.len, self.elapsed(), summary.as_ref());
        if self.finished.swap(true, Ordering::Relaxed) {
            return line;
        }
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.finish_and_clear();
                eprintln!("{line}");
            }
            (None, Mode::Hidden) => {}
            (None, _) => eprintln!("{line}"),
        }
        line
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A phase that ended early (error, Ctrl-C) must not leave a half-drawn bar behind.
        if let Some(bar) = &self.bar
            && !self.finished.load(Ordering::Relaxed)
        {
            bar.abandon();
        }
    }
}

/// `label: summary (pos/len steps, 12.3 steps/s, 1m05s)`; the summary part is left out when empty.
pub fn summary_line(label: &str, pos: u64, len: Option<u64>, elapsed: Duration, summary: &str) -> String {
    let steps = match len {
        Some(len) => format!("{pos}/{len}"),
        None => pos.to_string(),
    };
    let r = rate(pos, elapsed);
    let rate_s = if r >= 100.0 { format!("{r:.0}/s") } else { format!("{r:.2}/s") };
    let head = if summary.is_empty() { label.to_string() } else { format!("{label}: {summary}") };
    format!("{head} ({steps} steps, {rate_s}, {})", format_duration(elapsed))
}

/// One line summing up an epoch: `epoch 3/10  train_loss 0.4321  val_acc 0.8123  (1m05s)`.
pub fn epoch_line(epoch: usize, epochs: usize, values: &[(&str, f64)], elapsed: Duration) -> String {
    let width = epochs.to_string().len();
    let mut s = format!("epoch {epoch:>width$}/{epochs}");
    for (name, v) in values {
        s.push_str("  ");
        s.push_str(name);
        s.push(' ');
        s.push_str(&format_metric(*v));
    }
    s.push_str(&format!("  ({})", format_duration(elapsed)));
    s
}

/// Four decimals for usual magnitudes, scientific notation for tiny or huge values (learning rates).
pub fn format_metric(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e5).contains(&a) {
        format!("{v:.4}")
    } else if v.is_finite() {
        format!("{v:.3e}")
    } else {
        format!("{v}")
    }
}

/// `0.42s`, `12.3s`, `4m05s`, `2h03m`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2}s")
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        let t = s as u64;
        format!("{}m{:02}s", t / 60, t % 60)
    } else {
        let t = s as u64;
        format!("{}h{:02}m", t / 3600, (t % 3600) / 60)
    }
}

/// Items per second (0 when no time has passed).
pub fn rate(items: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { items as f64 / s } else { 0.0 }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[test]
    fn heartbeat_is_due_once_per_interval_and_says_where_it_is() {
        let p = Progress::with_mode(Some(10), "train-fast", Mode::Hidden).with_heartbeat(Duration::from_millis(30));
        assert_eq!(p.heartbeat(), None, "not due at the start");
        p.inc(4);
        p.set_message("loss 0.5");
        std::thread::sleep(Duration::from_millis(40));
        let line = p.heartbeat().expect("due after the interval");
        assert!(line.starts_with("train-fast: loss 0.5 (4/10 steps, "), "{line}");
        assert!(line.contains(", eta ") && line.ends_with(')'), "{line}");
        assert_eq!(p.heartbeat(), None, "given once per interval");
        let quiet = Progress::with_mode(Some(10), "x", Mode::Hidden);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(quiet.heartbeat(), None, "the default interval is a minute");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_millis(420)), "0.42s");
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(format_duration(Duration::from_secs(2 * 3600 + 3 * 60 + 59)), "2h03m");
    }

    #[test]
    fn metric_format_switches_to_scientific_for_learning_rates() {
        assert_eq!(format_metric(0.43215), "0.4321");
        assert_eq!(format_metric(0.0), "0.0000");
        assert_eq!(format_metric(1e-4), "1.000e-4");
        assert_eq!(format_metric(f64::NAN), "NaN");
    }

    #[test]
    fn epoch_line_lists_values_in_order() {
        let l = epoch_line(3, 10, &[("train_loss", 0.5), ("val_acc", 0.8125)], Duration::from_secs(65));
        assert_eq!(l, "epoch  3/10  train_loss 0.5000  val_acc 0.8125  (1m05s)");
    }

    #[test]
    fn hidden_progress_counts_and_summarises() {
        let p = Progress::with_mode(Some(10), "train", Mode::Hidden);
        assert_eq!(p.mode(), Mode::Hidden);
        p.inc(3);
        p.inc(4);
        p.set_message("loss 0.1");
        assert_eq!(p.position(), 7);
        assert_eq!(p.message(), "loss 0.1");
        let line = p.finish("loss 0.1234");
        assert!(line.starts_with("train: loss 0.1234 (7/10 steps, "), "{line}");
        // A second finish prints nothing new but describes the same phase.
        assert!(p.finish("loss 0.1234").starts_with("train: loss 0.1234 (7/10 steps, "));
    }

    #[test]
    fn summary_line_without_length_or_summary() {
        let l = summary_line("scan", 50, None, Duration::from_secs(10), "");
        assert_eq!(l, "scan (50 steps, 5.00/s, 10.0s)");
        let l = summary_line("eval", 1000, Some(1000), Duration::from_secs(2), "acc 0.9");
        assert_eq!(l, "eval: acc 0.9 (1000/1000 steps, 500/s, 2.00s)");
    }

    #[test]
    fn plain_mode_draws_no_bar() {
        let p = Progress::with_mode(Some(5), "x", Mode::Plain);
        assert!(p.bar.is_none());
        let s = Progress::with_mode(None, "x", Mode::Bar);
        assert!(s.bar.is_some());
        s.finish("");
    }
}

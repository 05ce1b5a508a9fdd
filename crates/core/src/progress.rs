//! Progress display (TEMPORARY minimal version).

/// A progress bar, or plain lines when stderr is not a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    /// A bar of `len` steps.
    pub fn bar(len: u64, label: &str) -> Self {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_prefix(label.to_string());
        Self { bar }
    }
    /// Advances by `n`.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }
    /// Sets the message.
    pub fn set_message(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }
    /// Finishes with a summary line.
    pub fn finish(&self, summary: &str) {
        self.bar.finish_and_clear();
        eprintln!("{summary}");
    }
}

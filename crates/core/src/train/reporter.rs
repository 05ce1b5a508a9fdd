//! How [`super::fit`] is told to stop and how it tells what it does: a [`StopFlag`] it checks after
//! every step (the binaries connect it to Ctrl-C) and a [`Reporter`] that receives the progress
//! (the default draws a bar per epoch on stderr). Neither is global: both come with
//! [`super::FitOptions`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::progress::Progress;

/// Asks training to stop after the current step; clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag that only [`StopFlag::request`] sets.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's Ctrl-C flag: the first Ctrl-C sets it (training stops after the current step and
    /// saves a resumable checkpoint), a second one exits with code 130. The handler is installed once.
    pub fn on_ctrl_c() -> Self {
        static CTRL_C: OnceLock<StopFlag> = OnceLock::new();
        CTRL_C
            .get_or_init(|| {
                let flag = StopFlag::new();
                let seen = flag.clone();
                let _ = ctrlc::set_handler(move || {
                    if seen.0.swap(true, Ordering::SeqCst) {
                        std::process::exit(130);
                    }
                    eprintln!("\ninterrupt: stopping after the current step (Ctrl-C again to quit now)");
                });
                flag
            })
            .clone()
    }

    /// Asks for the stop.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One step's numbers for the progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// The step's loss.
    pub loss: f64,
    /// Training images per second so far in the epoch.
    pub images_per_sec: f64,
    /// The head's learning rate of the step.
    pub lr: f64,
}

/// Receives what training does. Methods take `&self` so that one reporter can be shared.
pub trait Reporter: Send + Sync + fmt::Debug {
    /// An epoch (0-based) of `epochs` starts with `steps` steps.
    fn epoch_start(&self, epoch: usize, epochs: usize, steps: usize);
    /// A step finished.
    fn step(&self, step: &StepProgress);
    /// The epoch ended; `summary` is its one-line summary (or why it stopped).
    fn epoch_end(&self, summary: &str);
    /// Anything else worth a line: resuming, a retry, early stopping, where the weights are.
    fn note(&self, message: &str);
}

/// The default: a progress bar per epoch on stderr (plain lines when stderr is no terminal) and
/// notes as lines.
#[derive(Debug, Default)]
pub struct ConsoleReporter {
    bar: Mutex<Option<Progress>>,
}

impl Reporter for ConsoleReporter {
    fn epoch_start(&self, epoch: usize, epochs: usize, steps: usize) {
        if let Ok(mut bar) = self.bar.lock() {
            *bar = Some(Progress::bar(steps as u64, format!("epoch {}/{}", epoch + 1, epochs)));
        }
    }

    fn step(&self, s: &StepProgress) {
        if let Ok(bar) = self.bar.lock()
            && let Some(bar) = bar.as_ref()
        {
            bar.inc(1);
            bar.set_message(format!("loss {:.4}  {:.1} img/s  lr {:.2e}", s.loss, s.images_per_sec, s.lr));
        }
    }

    fn epoch_end(&self, summary: &str) {
        if let Ok(mut bar) = self.bar.lock()
            && let Some(bar) = bar.take()
        {
            bar.finish(summary);
        }
    }

    fn note(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// Prints nothing (library use, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct SilentReporter;

impl Reporter for SilentReporter {
    fn epoch_start(&self, _: usize, _: usize, _: usize) {}
    fn step(&self, _: &StepProgress) {}
    fn epoch_end(&self, _: &str) {}
    fn note(&self, _: &str) {}
}

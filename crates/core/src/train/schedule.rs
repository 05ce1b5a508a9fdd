//! Learning-rate schedules: linear warmup, then cosine decay, step decay or a constant rate. The rate is
//! a pure function of the global step, so a resumed run continues the exact schedule.

use serde::{Deserialize, Serialize};

/// Shape of the schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Cosine decay from the base rate to `base * min_lr_ratio` at the last step.
    Cosine,
    /// Multiply by `gamma` every `step_size` epochs.
    Step,
    /// Keep the base rate.
    Constant,
}

/// A schedule over `total_steps` optimiser steps of `steps_per_epoch` each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Shape after warmup.
    pub kind: ScheduleKind,
    /// Warmup length in steps (linear from `warmup_start` × base to base).
    pub warmup_steps: usize,
    /// Fraction of the base rate the warmup starts from.
    pub warmup_start: f64,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Steps per epoch (for step decay).
    pub steps_per_epoch: usize,
    /// Epochs between decays (step decay).
    pub step_size: usize,
    /// Decay factor (step decay).
    pub gamma: f64,
    /// Final rate as a fraction of the base (cosine).
    pub min_lr_ratio: f64,
}

impl Schedule {
    /// Multiplier of the base learning rate at `step` (0-based).
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            let t = (step + 1) as f64 / self.warmup_steps as f64;
            return self.warmup_start + (1.0 - self.warmup_start) * t;
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Step => {
                let epoch = step / self.steps_per_epoch.max(1);
                self.gamma.powi((epoch / self.step_size.max(1)) as i32)
            }
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            warmup_steps: 10,
            warmup_start: 0.1,
            total_steps: 110,
            steps_per_epoch: 10,
            step_size: 3,
            gamma: 0.1,
            min_lr_ratio: 0.01,
        }
    }

    #[test]
    fn warmup_is_linear_and_reaches_one() {
        let s = schedule(ScheduleKind::Constant);
        assert!((s.factor(0) - (0.1 + 0.9 * 0.1)).abs() < 1e-12);
        assert!((s.factor(9) - 1.0).abs() < 1e-12);
        assert_eq!(s.factor(50), 1.0);
    }

    #[test]
    fn cosine_ends_at_floor_and_halves_midway() {
        let s = schedule(ScheduleKind::Cosine);
        assert!((s.factor(10) - 1.0).abs() < 1e-12);
        assert!((s.factor(60) - (0.01 + 0.99 * 0.5)).abs() < 1e-12);
        assert!((s.factor(110) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn step_decays_every_step_size_epochs() {
        let s = schedule(ScheduleKind::Step);
        assert_eq!(s.factor(29), 1.0);
        assert!((s.factor(30) - 0.1).abs() < 1e-12);
        assert!((s.factor(65) - 0.01).abs() < 1e-12);
    }
}

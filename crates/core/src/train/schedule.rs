//! Learning-rate schedules: linear warmup, then cosine decay, step decay or a constant rate. The rate is
//! a pure function of the global step, so a resumed run continues the exact schedule; under a time budget
//! ([`Schedule::factor_at`]) the cosine follows the fraction of the budget spent instead, so that a
//! refitted epoch count never makes the rate climb again.

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
            return self.warmup(step);
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
                self.cosine(t)
            }
        }
    }

    /// Multiplier at `step` when `budget_spent` (0 to 1) of a time budget is gone: the cosine's position
    /// is the budget fraction, times the warmup ramp during warmup (as Ultralytics applies its warmup on
    /// top of the epoch schedule). The epoch count that a budget refits after every epoch can grow when
    /// later epochs run faster than the first; a step-based cosine would then jump back up, this one only
    /// falls. Other kinds, and `None`, are [`Schedule::factor`].
    pub fn factor_at(&self, step: usize, budget_spent: Option<f64>) -> f64 {
        match (self.kind, budget_spent) {
            (ScheduleKind::Cosine, Some(spent)) => {
                let ramp = if step < self.warmup_steps { self.warmup(step) } else { 1.0 };
                let t = if spent.is_finite() { spent.clamp(0.0, 1.0) } else { 1.0 };
                ramp * self.cosine(t)
            }
            _ => self.factor(step),
        }
    }

    /// Linear warmup from `warmup_start` to 1 over `warmup_steps`.
    fn warmup(&self, step: usize) -> f64 {
        let t = ((step + 1) as f64 / self.warmup_steps.max(1) as f64).min(1.0);
        self.warmup_start + (1.0 - self.warmup_start) * t
    }

    /// Cosine from 1 at `t = 0` to `min_lr_ratio` at `t = 1`.
    fn cosine(&self, t: f64) -> f64 {
        self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
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
    fn a_budget_cosine_follows_the_time_spent_and_only_falls_after_warmup() {
        let s = schedule(ScheduleKind::Cosine);
        // Warmup ramps on top of the cosine: step 4 of 10 with 2% of the budget gone.
        let ramp = 0.1 + 0.9 * 0.5;
        let cos = 0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * 0.02).cos());
        assert!((s.factor_at(4, Some(0.02)) - ramp * cos).abs() < 1e-12);
        // The step no longer matters after warmup, only the budget fraction.
        assert!((s.factor_at(30, Some(0.5)) - s.factor_at(3000, Some(0.5))).abs() < 1e-12);
        assert!((s.factor_at(30, Some(0.5)) - (0.01 + 0.99 * 0.5)).abs() < 1e-12);
        assert!((s.factor_at(99, Some(1.3)) - 0.01).abs() < 1e-12, "past the budget: the floor");
        let mut last = f64::INFINITY;
        for i in 0..=100 {
            let f = s.factor_at(10 + i, Some(i as f64 / 100.0));
            assert!(f <= last, "rose at {i}%");
            last = f;
        }
        // Without a budget, or for another kind, the step schedule.
        assert_eq!(s.factor_at(60, None), s.factor(60));
        let step = schedule(ScheduleKind::Step);
        assert_eq!(step.factor_at(65, Some(0.1)), step.factor(65));
    }

    #[test]
    fn step_decays_every_step_size_epochs() {
        let s = schedule(ScheduleKind::Step);
        assert_eq!(s.factor(29), 1.0);
        assert!((s.factor(30) - 0.1).abs() < 1e-12);
        assert!((s.factor(65) - 0.01).abs() < 1e-12);
    }
}

//! How many epochs a run trains when the configuration does not fix them: an epoch count that scales
//! with the data set (`train.epochs = 0`), and a wall-clock budget (`train.time`, as Ultralytics'
//! `time=`) that refits the epoch count, and with it the learning-rate schedule, after every epoch.

/// Optimiser steps that `train.epochs = 0` aims at: a data set with few batches per epoch gets more
/// epochs, a large one fewer, instead of the embedded set's hand-tuned count.
pub const AUTO_TARGET_STEPS: usize = 1500;
/// Bounds of the automatic epoch count.
pub const AUTO_EPOCHS: (usize, usize) = (10, 300);

/// The epochs to train: `configured` when it is not 0, else enough for [`AUTO_TARGET_STEPS`] steps of
/// `steps_per_epoch`, within [`AUTO_EPOCHS`].
pub fn resolve_epochs(configured: usize, steps_per_epoch: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    AUTO_TARGET_STEPS.div_ceil(steps_per_epoch.max(1)).clamp(AUTO_EPOCHS.0, AUTO_EPOCHS.1)
}

/// The epoch count that fits a budget of `budget_s` seconds, given that this invocation started at
/// epoch `first_epoch`, has finished `next_epoch` and spent `spent_s` seconds: as many more epochs as
/// the mean epoch time allows, and never fewer than those already done.
pub fn fit_to_budget(budget_s: f64, spent_s: f64, first_epoch: usize, next_epoch: usize) -> usize {
    let done = next_epoch.saturating_sub(first_epoch);
    if done == 0 || budget_s.is_nan() || budget_s <= 0.0 {
        return next_epoch;
    }
    let per_epoch = (spent_s / done as f64).max(1e-9);
    let affordable = (budget_s / per_epoch).floor() as usize;
    first_epoch + affordable.max(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_epochs_scale_with_the_batches_per_epoch() {
        assert_eq!(resolve_epochs(7, 3), 7, "a configured count wins");
        assert_eq!(resolve_epochs(0, 50), 30); // 1500 / 50
        assert_eq!(resolve_epochs(0, 16), 94); // ceil(1500 / 16)
        assert_eq!(resolve_epochs(0, 1000), 10, "at least 10");
        assert_eq!(resolve_epochs(0, 1), 300, "at most 300");
    }

    #[test]
    fn the_budget_refits_the_epoch_count() {
        // 2 epochs of 30 s done in a 10-minute budget: 20 epochs fit.
        assert_eq!(fit_to_budget(600.0, 60.0, 0, 2), 20);
        // Slower than the budget: stop where we are.
        assert_eq!(fit_to_budget(600.0, 700.0, 0, 2), 2);
        // A resumed invocation counts from where it started.
        assert_eq!(fit_to_budget(100.0, 50.0, 5, 6), 7);
        assert_eq!(fit_to_budget(0.0, 50.0, 0, 3), 3, "no budget");
    }
}

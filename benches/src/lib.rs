//! Shared helpers for the criterion benchmarks live in the bench targets themselves.

//! detect (stub)

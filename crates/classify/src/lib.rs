//! classify (stub)

//! style (stub)

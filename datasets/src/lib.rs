//! Embedded data set generators (stub).

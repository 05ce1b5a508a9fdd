//! Detection heads, one family per file: [`yolo`] (anchor-free, decoupled, DFL). SSD and Faster
//! R-CNN heads will sit next to it.

pub mod yolo;

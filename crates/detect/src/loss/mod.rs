//! Training losses, one family per file: [`yolo`] (BCE + CIoU + DFL).

pub mod yolo;

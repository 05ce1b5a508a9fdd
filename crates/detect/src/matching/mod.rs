//! Assigning ground truth to predictions: [`tal`] (task-aligned, YOLOv8). SSD's IoU matching and
//! Faster R-CNN's proposal sampling will sit next to it.

pub mod tal;

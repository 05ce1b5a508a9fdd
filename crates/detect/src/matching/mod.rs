//! Assigning ground truth to predictions: [`tal`] (task-aligned, YOLOv8) and [`iou`] (torchvision's
//! `Matcher`, the SSD rule, balanced sampling and hard-negative mining for SSD and Faster R-CNN).

pub mod iou;
pub mod tal;

//! detect: object detection by transfer learning: a YOLO-style head, SSD and Faster R-CNN ([`ssd`],
//! [`faster_rcnn`], with [`roi_align`], [`priors`] and IoU [`matching`]) on the same backbones.
//!
//! Pipeline: [`data`] reads YOLO or COCO data sets (validating every box) → [`augment`] (mosaic,
//! random affine, flip, HSV, letterbox; boxes move with the pixels) → [`model`] = [`backbone`]
//! (any core backbone's C3/C4/C5) → [`neck`] (FPN + PAN) → [`heads`] (YOLOv8-style decoupled,
//! anchor-free, DFL) over [`anchors`]; training: [`matching`] (task-aligned assignment) and
//! [`loss`] (BCE, CIoU, DFL) through [`task`] in the shared loop; inference: [`postprocess`]
//! (decode, threshold, class-aware [`nms`], back through the letterbox); scoring: [`evaluate`] with
//! the pycocotools-exact [`eval`]; [`pipeline`], [`predict`] and [`report`] tie it together.

pub mod anchors;
pub mod augment;
pub mod backbone;
pub mod boxes;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod evaluate;
pub mod faster_rcnn;
pub mod heads;
pub mod iou;
pub mod loss;
pub mod matching;
pub mod model;
pub mod model_io;
pub mod neck;
pub mod nms;
pub mod pipeline;
pub mod postprocess;
pub mod predict;
pub mod priors;
pub mod report;
pub mod roi_align;
pub mod ssd;
pub mod task;

pub use config::DetectConfig;
pub use error::{DetectError, Result};

//! detect: object detection by transfer learning with three families on the same backbones, data,
//! augmentation, evaluation and commands (`--model yolo|ssd|faster-rcnn`, see [`model`]):
//! - YOLO-style: [`backbone`] (any core backbone's C3/C4/C5) → [`neck`] (FPN + PAN) → [`heads`]
//!   (decoupled, anchor-free, DFL) over [`anchors`]; task-aligned assignment ([`matching`]) and
//!   [`loss`] (BCE, CIoU, DFL); [`postprocess`] decodes and runs class-aware [`nms`].
//! - [`ssd`]: default boxes from [`priors`], IoU matching, hard-negative mining, SSD augmentation.
//! - [`faster_rcnn`]: FPN, RPN, [`roi_align`] and a two-layer box head.
//!
//! Shared: [`data`] reads YOLO or COCO data sets (validating every box) → [`augment`] (mosaic,
//! random affine, flip, HSV, letterbox; boxes move with the pixels) → [`task`] in the shared training
//! loop; [`boxes`] (coding, IoU), [`matching`], [`nms`] and [`priors`] serve every family; scoring is
//! [`evaluate`] with the pycocotools-exact [`eval`]; [`pipeline`], [`predict`] and [`report`] tie it
//! together.

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

//! detect: object detection by transfer learning with three families on the same backbones, data,
//! augmentation, evaluation and commands (`--model yolo|ssd|faster-rcnn`). Every family implements
//! [`family::DetectorFamily`] and is registered in [`family`]; [`model::Detector`] drives whichever
//! one the configuration names.
//! - [`yolo`]: FPN + PAN neck, decoupled anchor-free head with DFL, task-aligned assignment, BCE +
//!   CIoU + DFL loss.
//! - [`ssd`]: default boxes from [`priors`], IoU matching, hard-negative mining, SSD augmentation.
//! - [`faster_rcnn`]: FPN, RPN, [`roi_align`] and a two-layer box head.
//! - [`ultralytics`]: the exact YOLOv8 / YOLO11 networks, their checkpoints and post-processing.
//!
//! Shared: [`data`] reads YOLO or COCO data sets (validating every box) → [`augment`] (mosaic,
//! random affine, flip, HSV, letterbox; boxes move with the pixels) → [`task`] in the shared training
//! loop; [`backbone`], [`boxes`] (coding, IoU), [`matching`], [`nms`], [`priors`] and [`postprocess`]
//! serve every family; scoring is [`evaluate`] with the pycocotools-exact [`eval`]; [`pipeline`],
//! [`predict`] and [`report`] tie it together; [`export`] writes YOLO and SSD as ONNX (optionally with
//! NMS) and serves such a file.

pub mod augment;
pub mod backbone;
pub mod boxes;
pub mod compare;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod evaluate;
pub mod export;
pub mod family;
pub mod faster_rcnn;
pub mod matching;
pub mod model;
pub mod model_io;
pub mod nms;
pub mod pipeline;
pub mod postprocess;
pub mod predict;
pub mod priors;
pub mod report;
pub mod roi_align;
pub mod ssd;
pub mod task;
pub mod ultralytics;
pub mod yolo;

pub use config::DetectConfig;
pub use error::{DetectError, Result};

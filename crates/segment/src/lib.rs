//! segment: semantic segmentation by transfer learning.
//!
//! Pipeline: [`data`] indexes images and index masks (or generates the embedded `shapes-seg` set) and
//! loads them through [`augment`] (joint image/mask transforms) → [`model`] builds a core backbone with a
//! [`unet`] or [`deeplab`] head → [`task`] trains it through the shared loop with the [`loss`] terms →
//! [`evaluate`] scores it with [`metrics`] at the original resolution → [`predict`] writes index masks and
//! overlays → [`report`] writes plots and `report.html`. [`export`] writes the network as ONNX and serves such a file. [`mask`] reads grey and palette PNG masks.

pub mod augment;
pub mod config;
pub mod data;
pub mod deeplab;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod loss;
pub mod mask;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod predict;
pub mod report;
pub mod task;
pub mod unet;

pub use config::SegmentConfig;
pub use error::SegmentError;

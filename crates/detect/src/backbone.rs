//! What every family does with its core backbone's maps: hand them on in float32. (Its ImageNet
//! weights are loaded by `tlcv_core::weights::load_backbone`.)

use tch::{Kind, Tensor};

/// Backbone maps in float32. Under mixed precision the backbone runs in bfloat16 and everything after
/// it (neck, heads, box coding, losses) in float32; float32 maps pass through untouched.
pub fn float32(maps: Vec<Tensor>) -> Vec<Tensor> {
    maps.into_iter().map(|m| if m.kind() == Kind::Float { m } else { m.to_kind(Kind::Float) }).collect()
}

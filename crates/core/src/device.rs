//! Device choice: CPU by default, CUDA when asked for or, with `auto`, when available.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA if libtorch was set up with CUDA and a GPU is visible, else CPU.
    Auto,
    /// Always the CPU.
    #[default]
    Cpu,
    /// The first CUDA device; an error if there is none.
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(Error::Invalid(format!("unknown device `{other}` (expected auto, cpu or cuda)"))),
        }
    }
}

impl DeviceChoice {
    /// Resolves the choice to a tch device.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Auto => Ok(tch::Device::cuda_if_available()),
            Self::Cuda if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
            Self::Cuda => Err(Error::Invalid(
                "device = \"cuda\" but no CUDA device is usable: run `cargo xtask setup --cuda` on a machine with an NVIDIA GPU"
                    .into(),
            )),
        }
    }
}

/// Whether this CPU has AMX tile instructions for bf16 (Intel Xeon since Sapphire Rapids), where bf16
/// matrix multiplies run several times faster than float32.
pub fn cpu_has_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::fs::read_to_string("/proc/cpuinfo").map(|info| info.contains("amx_bf16")).unwrap_or(false)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where bf16 pays off.
pub fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| info.contains("avx512_bf16") || info.contains("amx_bf16"))
            .unwrap_or(false)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

//! The layer tables of Ultralytics' `yolov8.yaml` and `yolo11.yaml` and the compound scaling that
//! `ultralytics.nn.tasks.parse_model` applies to them: `n` repeats become
//! `max(round(n * depth), 1)` (Python's round, half to even), `c` output channels become
//! `make_divisible(min(c, max_channels) * width, 8)`, and at the `m`/`l`/`x` scales every YOLO11
//! `C3k2` uses `C3k` inner blocks. Row `i` of a table is module `model.i` of the state dict.

use std::fmt;
use std::str::FromStr;

/// The YOLO generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// YOLOv8 (Jocher et al. 2023): C2f blocks, plain-convolution class branch.
    V8,
    /// YOLO11 (Jocher & Qiu 2024): C3k2 blocks, C2PSA attention, depthwise class branch.
    V11,
}

/// The model size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scale {
    /// Nano.
    N,
    /// Small.
    S,
    /// Medium.
    M,
    /// Large.
    L,
    /// Extra large.
    X,
}

impl Scale {
    fn letter(self) -> char {
        match self {
            Scale::N => 'n',
            Scale::S => 's',
            Scale::M => 'm',
            Scale::L => 'l',
            Scale::X => 'x',
        }
    }

    /// From `n`, `s`, `m`, `l` or `x`.
    pub fn from_letter(c: char) -> Option<Scale> {
        Some(match c {
            'n' => Scale::N,
            's' => Scale::S,
            'm' => Scale::M,
            'l' => Scale::L,
            'x' => Scale::X,
            _ => return None,
        })
    }
}

/// One of the networks, e.g. `yolov8n` or `yolo11s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct YoloArch {
    /// The generation.
    pub version: Version,
    /// The size.
    pub scale: Scale,
}

/// Every name [`YoloArch::from_str`] accepts.
pub const ARCH_NAMES: [&str; 10] =
    ["yolov8n", "yolov8s", "yolov8m", "yolov8l", "yolov8x", "yolo11n", "yolo11s", "yolo11m", "yolo11l", "yolo11x"];

impl fmt::Display for YoloArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = match self.version {
            Version::V8 => "yolov8",
            Version::V11 => "yolo11",
        };
        write!(f, "{v}{}", self.scale.letter())
    }
}

impl FromStr for YoloArch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let (version, rest) = if let Some(r) = lower.strip_prefix("yolov8") {
            (Version::V8, r)
        } else if let Some(r) = lower.strip_prefix("yolo11").or_else(|| lower.strip_prefix("yolov11")) {
            (Version::V11, r)
        } else {
            return Err(format!("`{s}`: not an Ultralytics model (expected one of {})", ARCH_NAMES.join(", ")));
        };
        let mut chars = rest.chars();
        match (chars.next().and_then(Scale::from_letter), chars.next()) {
            (Some(scale), None) => Ok(YoloArch { version, scale }),
            _ => Err(format!("`{s}`: unknown scale (expected one of {})", ARCH_NAMES.join(", "))),
        }
    }
}

impl serde::Serialize for YoloArch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for YoloArch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A module of the YAML, before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Module {
    /// `Conv(c2, k, s)`.
    Conv { c2: i64, k: i64, s: i64 },
    /// `C2f(c2, shortcut)`, `n` bottlenecks.
    C2f { c2: i64, n: i64, shortcut: bool },
    /// `C3k2(c2, c3k, e)`, `n` inner blocks.
    C3k2 { c2: i64, n: i64, c3k: bool, e: f64 },
    /// `SPPF(c2, k)`.
    Sppf { c2: i64, k: i64 },
    /// `C2PSA(c2)`, `n` attention blocks.
    C2psa { c2: i64, n: i64 },
    /// `nn.Upsample(None, 2, "nearest")`.
    Upsample,
    /// `Concat(1)`.
    Concat,
    /// `Detect(nc)`.
    Detect,
}

/// One YAML row: where its input comes from (`-1` = the previous row) and the module.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Input rows.
    pub from: &'static [i64],
    /// The module.
    pub module: Module,
}

const fn row(from: &'static [i64], module: Module) -> Row {
    Row { from, module }
}

const PREV: &[i64] = &[-1];

const fn conv(c2: i64) -> Module {
    Module::Conv { c2, k: 3, s: 2 }
}

/// `yolov8.yaml` (backbone then head).
const V8: [Row; 23] = [
    row(PREV, conv(64)),
    row(PREV, conv(128)),
    row(PREV, Module::C2f { c2: 128, n: 3, shortcut: true }),
    row(PREV, conv(256)),
    row(PREV, Module::C2f { c2: 256, n: 6, shortcut: true }),
    row(PREV, conv(512)),
    row(PREV, Module::C2f { c2: 512, n: 6, shortcut: true }),
    row(PREV, conv(1024)),
    row(PREV, Module::C2f { c2: 1024, n: 3, shortcut: true }),
    row(PREV, Module::Sppf { c2: 1024, k: 5 }),
    row(PREV, Module::Upsample),
    row(&[-1, 6], Module::Concat),
    row(PREV, Module::C2f { c2: 512, n: 3, shortcut: false }),
    row(PREV, Module::Upsample),
    row(&[-1, 4], Module::Concat),
    row(PREV, Module::C2f { c2: 256, n: 3, shortcut: false }),
    row(PREV, conv(256)),
    row(&[-1, 12], Module::Concat),
    row(PREV, Module::C2f { c2: 512, n: 3, shortcut: false }),
    row(PREV, conv(512)),
    row(&[-1, 9], Module::Concat),
    row(PREV, Module::C2f { c2: 1024, n: 3, shortcut: false }),
    row(&[15, 18, 21], Module::Detect),
];

/// `yolo11.yaml` (backbone then head).
const V11: [Row; 24] = [
    row(PREV, conv(64)),
    row(PREV, conv(128)),
    row(PREV, Module::C3k2 { c2: 256, n: 2, c3k: false, e: 0.25 }),
    row(PREV, conv(256)),
    row(PREV, Module::C3k2 { c2: 512, n: 2, c3k: false, e: 0.25 }),
    row(PREV, conv(512)),
    row(PREV, Module::C3k2 { c2: 512, n: 2, c3k: true, e: 0.5 }),
    row(PREV, conv(1024)),
    row(PREV, Module::C3k2 { c2: 1024, n: 2, c3k: true, e: 0.5 }),
    row(PREV, Module::Sppf { c2: 1024, k: 5 }),
    row(PREV, Module::C2psa { c2: 1024, n: 2 }),
    row(PREV, Module::Upsample),
    row(&[-1, 6], Module::Concat),
    row(PREV, Module::C3k2 { c2: 512, n: 2, c3k: false, e: 0.5 }),
    row(PREV, Module::Upsample),
    row(&[-1, 4], Module::Concat),
    row(PREV, Module::C3k2 { c2: 256, n: 2, c3k: false, e: 0.5 }),
    row(PREV, conv(256)),
    row(&[-1, 13], Module::Concat),
    row(PREV, Module::C3k2 { c2: 512, n: 2, c3k: false, e: 0.5 }),
    row(PREV, conv(512)),
    row(&[-1, 10], Module::Concat),
    row(PREV, Module::C3k2 { c2: 1024, n: 2, c3k: true, e: 0.5 }),
    row(&[16, 19, 22], Module::Detect),
];

impl YoloArch {
    /// The unscaled rows.
    pub fn rows(self) -> &'static [Row] {
        match self.version {
            Version::V8 => &V8,
            Version::V11 => &V11,
        }
    }

    /// `(depth, width, max_channels)` of the scale, from the YAML's `scales`.
    pub fn multiples(self) -> (f64, f64, i64) {
        match (self.version, self.scale) {
            (Version::V8, Scale::N) => (0.33, 0.25, 1024),
            (Version::V8, Scale::S) => (0.33, 0.50, 1024),
            (Version::V8, Scale::M) => (0.67, 0.75, 768),
            (Version::V8, Scale::L) => (1.00, 1.00, 512),
            (Version::V8, Scale::X) => (1.00, 1.25, 512),
            (Version::V11, Scale::N) => (0.50, 0.25, 1024),
            (Version::V11, Scale::S) => (0.50, 0.50, 1024),
            (Version::V11, Scale::M) => (0.50, 1.00, 512),
            (Version::V11, Scale::L) => (1.00, 1.00, 512),
            (Version::V11, Scale::X) => (1.00, 1.50, 512),
        }
    }

    /// Scaled repeats: `max(round(n * depth), 1)` for `n > 1` (Python's half-to-even round).
    pub fn repeats(self, n: i64) -> i64 {
        if n > 1 { ((n as f64 * self.multiples().0).round_ties_even() as i64).max(1) } else { n }
    }

    /// Scaled output channels: `make_divisible(min(c, max_channels) * width, 8)`.
    pub fn channels(self, c: i64) -> i64 {
        let (_, width, max_c) = self.multiples();
        ((c.min(max_c) as f64 * width) / 8.0).ceil() as i64 * 8
    }

    /// Whether YOLO11's `C3k2` rows all use `C3k` inner blocks (scales `m`, `l`, `x`).
    pub fn forces_c3k(self) -> bool {
        self.version == Version::V11 && matches!(self.scale, Scale::M | Scale::L | Scale::X)
    }

    /// Number of backbone modules, `model.0 ..` (YOLOv8: 0-9 up to SPPF; YOLO11: 0-10 up to C2PSA):
    /// what `feature-extract` freezes.
    pub fn backbone_len(self) -> usize {
        match self.version {
            Version::V8 => 10,
            Version::V11 => 11,
        }
    }

    /// The backbone rows whose outputs are the stride-8, 16 and 32 maps (C3, C4, C5).
    pub fn feature_rows(self) -> [usize; 3] {
        match self.version {
            Version::V8 => [4, 6, 9],
            Version::V11 => [4, 6, 10],
        }
    }

    /// The neck and head modules (`model.{backbone_len} ..= model.{detect}`), which never freeze.
    pub fn head_prefixes(self) -> &'static [&'static str] {
        const V8_HEAD: [&str; 13] = [
            "model.10", "model.11", "model.12", "model.13", "model.14", "model.15", "model.16", "model.17", "model.18",
            "model.19", "model.20", "model.21", "model.22",
        ];
        const V11_HEAD: [&str; 13] = [
            "model.11", "model.12", "model.13", "model.14", "model.15", "model.16", "model.17", "model.18", "model.19",
            "model.20", "model.21", "model.22", "model.23",
        ];
        match self.version {
            Version::V8 => &V8_HEAD,
            Version::V11 => &V11_HEAD,
        }
    }

    /// Index of the `Detect` row.
    pub fn detect_index(self) -> usize {
        self.rows().len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in ARCH_NAMES {
            let a: YoloArch = n.parse().unwrap_or_else(|e: String| unreachable!("{e}"));
            assert_eq!(a.to_string(), n);
        }
        assert!("yolov8q".parse::<YoloArch>().is_err());
        assert!("yolov5n".parse::<YoloArch>().is_err());
        assert!("yolov8nn".parse::<YoloArch>().is_err());
    }

    #[test]
    fn scaling_matches_parse_model() {
        let v8n: YoloArch = "yolov8n".parse().unwrap_or_else(|e: String| unreachable!("{e}"));
        // C2f repeats 3 and 6 at depth 0.33 -> 1 and 2; widths 64 .. 1024 at 0.25.
        assert_eq!((v8n.repeats(3), v8n.repeats(6), v8n.repeats(1)), (1, 2, 1));
        assert_eq!((v8n.channels(64), v8n.channels(1024)), (16, 256));
        let v8m: YoloArch = "yolov8m".parse().unwrap_or_else(|e: String| unreachable!("{e}"));
        // depth 0.67: round(2.01) = 2, round(4.02) = 4; width 0.75 with max 768: 1024 -> 576.
        assert_eq!((v8m.repeats(3), v8m.repeats(6), v8m.channels(1024)), (2, 4, 576));
        let y11n: YoloArch = "yolo11n".parse().unwrap_or_else(|e: String| unreachable!("{e}"));
        // round(2 * 0.5) = 1; Python rounds 1.5 to 2 and 2.5 to 2.
        assert_eq!(y11n.repeats(2), 1);
        assert_eq!(((1.5f64).round_ties_even(), (2.5f64).round_ties_even()), (2.0, 2.0));
        assert!(!y11n.forces_c3k() && "yolo11m".parse::<YoloArch>().is_ok_and(|a| a.forces_c3k()));
        // The head prefixes are every module from the end of the backbone to Detect.
        for a in [v8n, y11n] {
            let want: Vec<String> = (a.backbone_len()..=a.detect_index()).map(|i| format!("model.{i}")).collect();
            assert_eq!(a.head_prefixes(), want.as_slice());
        }
    }
}

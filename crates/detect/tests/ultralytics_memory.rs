//! Reading an Ultralytics checkpoint holds one copy of the weights: the file is memory-mapped and
//! only the pages of the chosen model are touched, each tensor is copied once out of the map in its
//! stored dtype, and the other model and the optimizer state of a training checkpoint are never read.
//! Measured as the process's peak resident memory (`VmHWM`, reset through `/proc/self/clear_refs`),
//! so this is the only test of its binary. The read time (wall and CPU) is printed, not asserted.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test failures are panics

use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use tlcv_core::checkpoint::read_checkpoint;

const MIB: u64 = 1 << 20;

/// A `/proc/self/status` field in bytes.
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// CPU seconds (user + system) this process has used: fields 14 and 15 of `/proc/self/stat`, in
/// clock ticks of 1/100 s.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_name.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// Reads `path`; returns (peak resident growth, bytes of the tensors read, wall seconds, CPU seconds).
fn measure(path: &Path) -> (u64, u64, f64, f64) {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak resident size (clear_refs)");
    let before = status("VmRSS");
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let ck = read_checkpoint(path).unwrap();
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let peak = status("VmHWM");
    let bytes = ck.state_dict.iter().map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64).sum();
    (peak.saturating_sub(before), bytes, secs, cpu)
}

#[test]
fn reading_a_checkpoint_holds_one_copy_of_the_weights() {
    let fx = tlcv_core::paths::generated_fixture("ultralytics").unwrap_or_else(|e| panic!("{e}"));
    // libtorch's own start-up is not the reader's.
    let _ = Tensor::ones([1 << 16], (Kind::Float, Device::Cpu)).sum(Kind::Float).double_value(&[]);
    for (file, copies_in_file) in [("yolov8m.pt", 1.0), ("yolov8s.pt", 3.0)] {
        let path = fx.join(file);
        let len = std::fs::metadata(&path).unwrap().len();
        let (growth, weights, secs, cpu) = measure(&path);
        eprintln!(
            "{file}: {:.1} MB file, {:.1} MB of weights read in {secs:.3} s ({cpu:.2} s of CPU), peak resident \
             growth {:.1} MB",
            len as f64 / 1e6,
            weights as f64 / 1e6,
            growth as f64 / 1e6
        );
        // The chosen model is (1 / copies) of the file: float16 as stored, nothing else read.
        let share = weights as f64 * copies_in_file / len as f64;
        assert!((0.9..=1.05).contains(&share), "{file}: read {weights} bytes of a {len}-byte file");
        // Its pages in the map plus one copy out of them, and a little for the pickle and zip index.
        assert!(growth <= 2 * weights + 16 * MIB, "{file}: peak grew by {growth} bytes for {weights} bytes of weights");
    }
}

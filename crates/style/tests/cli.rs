//! A tiny end-to-end `style run` through the binary: small size, few steps, real data (the Debian
//! images and the shipped EfficientNet-Lite0 weights from the store).

use std::process::Command;

#[test]
fn style_run_writes_the_image_and_reports_a_falling_style_loss() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out.png");
    let output = Command::new(env!("CARGO_BIN_EXE_style"))
        .args(["run", "--content", "chelsea.png", "--style", "starry_night.jpg", "--size", "64", "--steps", "8"])
        .args(["--set", "optim.levels=1", "--set", "run.threads=1", "--json", "--out"])
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "style run failed (run `cargo xtask setup` for the store): {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim())?;
    for key in ["content_loss", "style_loss", "initial_style_loss", "tv_loss", "seconds", "out"] {
        assert!(v.get(key).is_some(), "missing {key} in {stdout}");
    }
    let (s0, s1) = (v["initial_style_loss"].as_f64().unwrap_or(0.0), v["style_loss"].as_f64().unwrap_or(f64::MAX));
    assert!(s1 < 0.8 * s0, "style loss {s0} -> {s1} did not fall");
    let img = style::image::read(&out)?;
    // chelsea.png is 451x300: the longer side becomes 64.
    assert_eq!((img.width, img.height), (64, 43));
    Ok(())
}

#[test]
fn unknown_backbone_is_a_one_line_error_with_exit_code_2() -> std::io::Result<()> {
    let output = Command::new(env!("CARGO_BIN_EXE_style"))
        .args(["run", "--backbone", "resnet18", "--out", "/nonexistent/x.png"])
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: ") && stderr.contains("resnet18"), "{stderr}");
    Ok(())
}

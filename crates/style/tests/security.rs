//! Every `style` command that reads feature-network weights (`run`, `train-fast`, `score`, with
//! `--backbone vgg19 --weights FILE`) refuses the committed malicious pickles: exit code 2, one error
//! line naming `posix.system` and the file, no output written, and the marker file the pickles would
//! create never appears.

#![allow(clippy::panic, clippy::unwrap_used)]

use std::process::Command;

use opencv::{core, imgcodecs};

#[path = "../../core/tests/common/malicious.rs"]
mod malicious;

use malicious::{assert_refused, malicious_checkpoints};

#[test]
fn malicious_pickles_are_refused_by_every_style_command() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("photos/img.png");
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    let mut m = core::Mat::new_rows_cols_with_default(48, 64, core::CV_8UC3, core::Scalar::all(0.0)).unwrap();
    core::randu(&mut m, &core::Scalar::all(0.0), &core::Scalar::all(255.0)).unwrap();
    assert!(imgcodecs::imwrite(img.to_str().unwrap(), &m, &core::Vector::new()).unwrap());
    let (img_s, dir_s) = (img.to_str().unwrap(), img.parent().unwrap().to_str().unwrap());
    let out_png = tmp.path().join("out.png");
    let project = tmp.path().join("runs");
    let project_s = project.to_str().unwrap();
    for file in malicious_checkpoints() {
        let file_s = file.to_str().unwrap();
        let commands: [Vec<&str>; 3] = [
            vec![
                "run",
                "--content",
                img_s,
                "--style",
                img_s,
                "--out",
                out_png.to_str().unwrap(),
                "--project",
                project_s,
            ],
            vec!["train-fast", "--style", img_s, "--content-dir", dir_s, "--steps", "1", "--project", project_s],
            vec!["score", "--content", img_s, "--style", img_s, "--image", img_s],
        ];
        for args in commands {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_style"));
            cmd.args(&args).args(["--backbone", "vgg19", "--weights", file_s]);
            let what = format!("style {} --weights {file_s}", args[0]);
            assert_refused(&what, &mut cmd, &file);
            assert!(!out_png.exists(), "{what}: wrote an output");
        }
    }
}

//! ONNX export of the fast-style network (both output forms) against ONNX Runtime and tract: one export with a dynamic
//! batch and free height and width must pass `onnx.checker` (full check) and give tlcv's forward to
//! 1e-4 relative at two input sizes (37x50, odd and not square, and 64x64) on batches of 1 and 3 in
//! ONNX Runtime, and in tract at 37x50.

use anyhow::{Context, Result, ensure};
use style::config::FastOutput;
use style::fast::FastModel;
use tch::{Device, Kind, Tensor};
use tlcv_core::onnx::parity::{Compare, ParityCheck, max_rel_err};
use tlcv_core::onnx::runtime::OnnxModel;
use tlcv_core::onnx::{self, ExportOptions};

const RTOL: f64 = 1e-4;

#[test]
fn fast_style_network_exports_for_any_size() -> Result<()> {
    for output in [FastOutput::Residual, FastOutput::Sigmoid] {
        tch::manual_seed(5);
        check_export(&FastModel::untrained(8, 2, output, Device::Cpu)?).with_context(|| format!("{output:?}"))?;
    }
    Ok(())
}

fn check_export(m: &FastModel) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut check = ParityCheck::new(tmp.path());
    let opts = ExportOptions { dynamic_batch: true, img_size: None, ..ExportOptions::new(0) };
    onnx::save(&m.export_onnx(&opts)?, &check.model_path("style"))?;
    check.model("style", Compare::Relative { rtol: RTOL });
    let mut first = None;
    for (h, w) in [(37, 50), (64, 64)] {
        for n in [1, 3] {
            let x = Tensor::rand([n, 3, h, w], (Kind::Float, Device::Cpu));
            let want = m.apply(&x);
            ensure!(want.size() == [n, 3, h, w], "output {:?}", want.size());
            check.run(&x, std::slice::from_ref(&want))?;
            first.get_or_insert((x, want));
        }
    }
    eprintln!("{}", check.check().context("ONNX Runtime parity")?);
    if let Some((x, want)) = first {
        let got = OnnxModel::load(&check.model_path("style"))?.run(&x)?;
        let err = max_rel_err(&got[0], &want);
        ensure!(err <= RTOL, "tract differs by {err:e}");
    }
    Ok(())
}

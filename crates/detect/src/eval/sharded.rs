//! Validation split over the ranks of a data-parallel run: each rank runs the detector on its share of
//! whole batches ([`Parallel::eval_items`], so every output is the one a single process computes),
//! the detections travel to rank 0 and from there to every rank as bytes (f64 bit patterns, so nothing
//! is rounded), and every rank scores the same full list: the mAP of one process, exactly, on each.

use tlcv_core::train::Parallel;

use crate::data::DetImage;
use crate::error::{DetectError, Result};
use crate::evaluate::{EVAL_MAX_PIXELS, EvalOutput, detect_files, evaluate_images, score_results};
use crate::model::Detector;
use crate::postprocess::{Detection, PostprocessConfig};

/// One image's outcome: its detections, or why it could not be read.
type ImageResult = std::result::Result<Vec<Detection>, String>;

/// [`evaluate_images`] with the images split over `parallel`'s ranks in batches of `batch`.
pub fn evaluate_images_sharded(
    model: &Detector,
    (images, names): (&[DetImage], &[String]),
    pp: &PostprocessConfig,
    batch: usize,
    parallel: &dyn Parallel,
) -> Result<EvalOutput> {
    if parallel.world_size() <= 1 {
        return evaluate_images(model, images, names, pp, batch);
    }
    let batch = batch.max(1);
    let mine = parallel.eval_items(images.len(), batch);
    let paths: Vec<_> = mine.iter().map(|&i| images[i].path.clone()).collect();
    let results = detect_files(model, &paths, pp, batch, EVAL_MAX_PIXELS);
    let gathered = parallel.gather_bytes(&encode(&mine, &results))?;
    let all = parallel.broadcast_bytes(gathered.map(|parts| parts.concat()).unwrap_or_default())?;
    score_results(images, names, decode(&all, images.len())?)
}

/// `(index, result)` records: index u64, then 1 and the detections (count, then box, score and class
/// of each), or 0 and the error message (length, UTF-8); little-endian.
fn encode(indices: &[usize], results: &[ImageResult]) -> Vec<u8> {
    let mut out = Vec::new();
    let u64le = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
    for (&index, result) in indices.iter().zip(results) {
        u64le(&mut out, index as u64);
        match result {
            Ok(dets) => {
                out.push(1);
                u64le(&mut out, dets.len() as u64);
                for d in dets {
                    for v in d.bbox.iter().chain([&d.score]) {
                        u64le(&mut out, v.to_bits());
                    }
                    u64le(&mut out, d.class as u64);
                }
            }
            Err(message) => {
                out.push(0);
                u64le(&mut out, message.len() as u64);
                out.extend_from_slice(message.as_bytes());
            }
        }
    }
    out
}

/// The records of [`encode`] (every rank's, concatenated) as one result per image, in image order.
fn decode(bytes: &[u8], images: usize) -> Result<Vec<ImageResult>> {
    let mut reader = Reader { bytes, at: 0 };
    let mut results: Vec<Option<ImageResult>> = vec![None; images];
    while reader.at < bytes.len() {
        let index = reader.u64()? as usize;
        let result = if reader.byte()? == 1 {
            let n = reader.u64()? as usize;
            let mut dets = Vec::with_capacity(n.min(bytes.len() / 48));
            for _ in 0..n {
                let mut v = [0.0f64; 5];
                for x in &mut v {
                    *x = f64::from_bits(reader.u64()?);
                }
                let class = reader.u64()? as usize;
                dets.push(Detection { bbox: [v[0], v[1], v[2], v[3]], score: v[4], class });
            }
            Ok(dets)
        } else {
            let n = reader.u64()? as usize;
            Err(String::from_utf8_lossy(reader.take(n)?).into_owned())
        };
        let slot = results.get_mut(index).ok_or_else(|| invalid(&format!("image {index} of {images}")))?;
        *slot = Some(result);
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| invalid(&format!("no rank evaluated image {i}"))))
        .collect()
}

fn invalid(what: &str) -> DetectError {
    DetectError::Invalid(format!("sharded validation: {what}"))
}

/// A cursor over [`encode`]'s bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| invalid("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_bit_for_bit_in_image_order() {
        let d = |x: f64, class| Detection { bbox: [x, 0.1 + x, 1.0 / 3.0, f64::MIN_POSITIVE], score: 0.7 * x, class };
        // Rank 1's images 1 and 3 arrive before rank 0's images 0 and 2.
        let rank1 = encode(&[1, 3], &[Ok(vec![d(2.5, 4)]), Err("bad PNG".into())]);
        let rank0 = encode(&[0, 2], &[Ok(vec![]), Ok(vec![d(1e-300, 0), d(7.0, 9)])]);
        let all = decode(&[rank1, rank0].concat(), 4).unwrap();
        assert_eq!(
            all,
            vec![Ok(vec![]), Ok(vec![d(2.5, 4)]), Ok(vec![d(1e-300, 0), d(7.0, 9)]), Err("bad PNG".into())]
        );
        assert!(decode(&encode(&[0], &[Ok(vec![])]), 2).is_err(), "an image no rank evaluated");
        assert!(decode(&encode(&[5], &[Ok(vec![])]), 2).is_err(), "an index out of range");
        let full = encode(&[0], &[Ok(vec![d(1.0, 1)])]);
        assert!(decode(&full[..full.len() - 3], 1).is_err(), "truncated");
    }
}

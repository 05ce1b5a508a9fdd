//! Every augmentation keeps the boxes on their objects: scenes of solid coloured rectangles on a
//! plain background are transformed, and the pixels inside each transformed box must still be that
//! rectangle's colour (and, for single-image transforms, the pixels just outside must not be).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use detect::augment::{
    self, Sample, finish_boxes, hflip, hsv_jitter, letterbox, mosaic, random_affine, resize_long, train_transform,
};
use detect::config::AugmentConfig;
use detect::data::Object;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tlcv_core::data::RgbImage;

const BG: [u8; 3] = [40, 40, 40];
const COLOURS: [[u8; 3]; 3] = [[230, 20, 20], [20, 220, 30], [30, 40, 235]];

/// A 160x120 scene with three rectangles; object class = colour index.
fn scene() -> (RgbImage, Vec<Object>) {
    let mut img = RgbImage::filled(160, 120, BG);
    let rects = [[20.0, 20.0, 60.0, 50.0], [90.0, 30.0, 150.0, 100.0], [10.0, 66.0, 50.0, 110.0]];
    let mut objs = Vec::new();
    for (c, r) in rects.iter().enumerate() {
        for y in r[1] as usize..r[3] as usize {
            for x in r[0] as usize..r[2] as usize {
                let i = (y * img.width + x) * 3;
                img.data[i..i + 3].copy_from_slice(&COLOURS[c]);
            }
        }
        objs.push(Object { class: c, bbox: *r });
    }
    (img, objs)
}

fn near(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
    a.iter().zip(&b).all(|(x, y)| (*x as i32 - *y as i32).abs() <= tol)
}

/// Pixels inside each box (2 px in from the edges) have the object's colour; with `ring`, pixels
/// 3 px outside each edge (when inside the image) do not. Returns the number of boxes checked.
fn check(s: &Sample, colour_of: &dyn Fn(usize) -> [u8; 3], ring: bool) -> usize {
    let (w, h) = (s.image.width as i64, s.image.height as i64);
    let mut checked = 0;
    for o in &s.objects {
        let c = colour_of(o.class);
        let [x1, y1, x2, y2] = o.bbox;
        let (ix1, iy1) = ((x1.ceil() as i64 + 2).max(0), (y1.ceil() as i64 + 2).max(0));
        let (ix2, iy2) = ((x2.floor() as i64 - 2).min(w), (y2.floor() as i64 - 2).min(h));
        if ix2 <= ix1 || iy2 <= iy1 {
            continue;
        }
        for y in iy1..iy2 {
            for x in ix1..ix2 {
                let p = s.image.pixel(x as usize, y as usize);
                assert!(near(p, c, 6), "box {:?} class {}: pixel ({x},{y}) is {p:?}, expected {c:?}", o.bbox, o.class);
            }
        }
        if ring {
            let (cx, cy) = (((x1 + x2) / 2.0) as i64, ((y1 + y2) / 2.0) as i64);
            let outside = [
                (x1.floor() as i64 - 3, cy),
                (x2.ceil() as i64 + 2, cy),
                (cx, y1.floor() as i64 - 3),
                (cx, y2.ceil() as i64 + 2),
            ];
            for (x, y) in outside {
                if x >= 0 && y >= 0 && x < w && y < h {
                    let p = s.image.pixel(x as usize, y as usize);
                    assert!(
                        !near(p, c, 30),
                        "box {:?} class {} is too large: ({x},{y}) is still {p:?}",
                        o.bbox,
                        o.class
                    );
                }
            }
        }
        checked += 1;
    }
    checked
}

fn colour(c: usize) -> [u8; 3] {
    COLOURS[c]
}

#[test]
fn the_scene_itself_passes() {
    let (img, objects) = scene();
    assert_eq!(check(&Sample { image: img, objects }, &colour, true), 3);
}

#[test]
fn letterbox_moves_boxes() {
    let (img, objs) = scene();
    let (s, info) = letterbox(&img, &objs, 96).unwrap();
    assert_eq!((s.image.width, s.image.height), (96, 96));
    assert!(info.pad_y > 0.0 && info.pad_x == 0.0);
    assert_eq!(check(&s, &colour, true), 3);
    // Mapping back gives the original boxes.
    for (o, m) in objs.iter().zip(&s.objects) {
        let back = info.unmap(m.bbox, 160.0, 120.0);
        assert!(o.bbox.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-6), "{:?} vs {back:?}", o.bbox);
    }
}

#[test]
fn random_affine_moves_boxes() {
    let (img, objs) = scene();
    let (base, _) = letterbox(&img, &objs, 128).unwrap();
    for seed in 0..12 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut s = random_affine(&base, 128, 0.5, 0.2, &mut rng).unwrap();
        finish_boxes(&mut s, 2.0, 0.0);
        assert!(check(&s, &colour, true) >= 1, "seed {seed}: no box left");
    }
}

#[test]
fn hflip_moves_boxes() {
    let (img, objs) = scene();
    let s = hflip(&Sample { image: img, objects: objs.clone() });
    assert_eq!(check(&s, &colour, true), 3);
    assert_eq!(s.objects[0].bbox, [100.0, 20.0, 140.0, 50.0]);
}

#[test]
fn hsv_jitter_keeps_boxes_and_uniform_objects() {
    let (img, objs) = scene();
    let mut s = Sample { image: img, objects: objs.clone() };
    let mut rng = StdRng::seed_from_u64(3);
    hsv_jitter(&mut s, 0.1, 0.7, 0.4, &mut rng);
    assert_eq!(s.objects, objs, "colour changes must not move boxes");
    // Each object is still one uniform colour, different from the background's.
    let bg = s.image.pixel(2, 2);
    let coloured = |c: usize| {
        let b = objs[c].bbox;
        s.image.pixel(((b[0] + b[2]) / 2.0) as usize, ((b[1] + b[3]) / 2.0) as usize)
    };
    assert_eq!(check(&s, &coloured, true), 3);
    for c in 0..3 {
        assert!(!near(coloured(c), bg, 10));
    }
}

#[test]
fn mosaic_moves_boxes() {
    let (img, objs) = scene();
    let tile = resize_long(&img, &objs, 96).unwrap();
    assert_eq!(check(&tile, &colour, true), 3);
    let tiles = [tile.clone(), tile.clone(), tile.clone(), tile];
    for seed in 0..8 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut m = mosaic(&tiles, 96, &mut rng).unwrap();
        assert_eq!((m.image.width, m.image.height), (192, 192));
        assert_eq!(m.objects.len(), 12);
        finish_boxes(&mut m, 2.0, 0.0);
        assert!(check(&m, &colour, false) >= 3, "seed {seed}");
        let mut out = random_affine(&m, 96, 0.3, 0.1, &mut rng).unwrap();
        finish_boxes(&mut out, 2.0, 0.0);
        assert_eq!((out.image.width, out.image.height), (96, 96));
        check(&out, &colour, false);
    }
}

#[test]
fn full_training_transform_keeps_boxes_on_objects() {
    let (img, objs) = scene();
    let cfg = AugmentConfig { hsv_h: 0.0, hsv_s: 0.0, hsv_v: 0.0, ..AugmentConfig::default() };
    let mut total = 0;
    for seed in 0..10 {
        let mut rng = StdRng::seed_from_u64(seed);
        let others = [(&img, objs.as_slice()), (&img, objs.as_slice()), (&img, objs.as_slice())];
        let s = train_transform((&img, &objs), Some(others), 128, &cfg, &mut rng).unwrap();
        total += check(&s, &colour, false);
        let s = train_transform((&img, &objs), None, 128, &cfg, &mut rng).unwrap();
        total += check(&s, &colour, true);
    }
    assert!(total > 40, "too few boxes survived: {total}");
}

#[test]
fn small_and_mostly_cropped_boxes_are_dropped() {
    let mut s = Sample {
        image: RgbImage::filled(100, 100, BG),
        objects: vec![
            Object { class: 0, bbox: [10.0, 10.0, 11.0, 40.0] },  // 1 px wide
            Object { class: 1, bbox: [-90.0, 10.0, 10.0, 40.0] }, // 10% visible
            Object { class: 2, bbox: [-10.0, 10.0, 30.0, 40.0] }, // 75% visible, clipped
            Object { class: 0, bbox: [50.0, 50.0, 60.0, 60.0] },  // untouched
        ],
    };
    finish_boxes(&mut s, 2.0, augment_min_visible());
    assert_eq!(
        s.objects,
        vec![Object { class: 2, bbox: [0.0, 10.0, 30.0, 40.0] }, Object { class: 0, bbox: [50.0, 50.0, 60.0, 60.0] }]
    );
}

fn augment_min_visible() -> f64 {
    let d = AugmentConfig::default().min_visible;
    assert!(d > 0.1 && d < 0.75);
    d
}

#[test]
fn letterbox_pad_value_is_yolo_grey() {
    let (img, objs) = scene();
    let (s, _) = letterbox(&img, &objs, 96).unwrap();
    assert_eq!(s.image.pixel(48, 0), [augment::PAD; 3]);
}

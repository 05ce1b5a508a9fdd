//! The COCO annotation reader (`detect::data::coco::parse_split`) on arbitrary JSON: it must return
//! an error or images whose every object is a finite box of positive size inside its image with a
//! known class. Image files do not exist here, so images without a size in the JSON are dropped.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(root) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let json = std::path::Path::new("instances_fuzz.json");
    let dir = std::path::Path::new("/nonexistent-tlcv-fuzz");
    let Ok((names, images, _issues)) = detect::data::coco::parse_split(&root, json, dir) else {
        return;
    };
    for im in &images {
        assert!(im.width > 0 && im.height > 0);
        for o in &im.objects {
            let [x1, y1, x2, y2] = o.bbox;
            assert!(o.class < names.len(), "class {} of {}", o.class, names.len());
            assert!(o.bbox.iter().all(|v| v.is_finite()), "{:?}", o.bbox);
            assert!(x1 >= 0.0 && y1 >= 0.0 && x2 <= f64::from(im.width) && y2 <= f64::from(im.height), "{:?}", o.bbox);
            assert!(x2 > x1 && y2 > y1, "{:?}", o.bbox);
        }
    }
});

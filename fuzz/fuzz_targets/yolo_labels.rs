//! The YOLO label parser (`detect::data::yolo::parse_labels`) and the `data.yaml` parser on arbitrary
//! text. The first 5 bytes choose the image size and class count; every object that comes out must
//! be a finite box of positive size inside the image with a known class.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let width = u32::from(u16::from_le_bytes([data[0], data[1]])) + 1;
    let height = u32::from(u16::from_le_bytes([data[2], data[3]])) + 1;
    let num_classes = usize::from(data[4]);
    let text = String::from_utf8_lossy(&data[5..]);
    let path = std::path::Path::new("fuzz.txt");
    let mut issues = detect::data::Issues::default();
    let objects = detect::data::yolo::parse_labels(&text, path, (width, height), num_classes, &mut issues);
    for o in &objects {
        let [x1, y1, x2, y2] = o.bbox;
        assert!(o.class < num_classes, "class {} of {num_classes}", o.class);
        assert!(o.bbox.iter().all(|v| v.is_finite()), "{:?}", o.bbox);
        assert!(x1 >= 0.0 && y1 >= 0.0 && x2 <= f64::from(width) && y2 <= f64::from(height), "{:?}", o.bbox);
        assert!(x2 > x1 && y2 > y1, "{:?}", o.bbox);
    }
    let _ = detect::data::yolo::parse_data_yaml(&text, std::path::Path::new("data.yaml"));
});

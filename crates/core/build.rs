//! Compiles the libjpeg shim (`csrc/jpeg.c`) and links the system libjpeg(-turbo), the same library
//! OpenCV's JPEG codec uses.

fn main() {
    println!("cargo:rerun-if-changed=csrc/jpeg.c");
    cc::Build::new().file("csrc/jpeg.c").warnings(true).extra_warnings(true).opt_level(2).compile("tlcv_jpeg");
    println!("cargo:rustc-link-lib=jpeg");
}

//! `configure_threads` in its own test binary, since it builds rayon's global pool once per process.

#![allow(clippy::unwrap_used)]

#[test]
fn two_cores_give_both_sides_two_threads() {
    assert_eq!(tlcv_core::data::configure_threads(2), (2, 2));
    assert_eq!(rayon::current_num_threads(), 2);
    assert_eq!(tch::get_num_threads(), 2);
    // The global pool exists now: a second call keeps it and reports its real size.
    assert_eq!(tlcv_core::data::configure_threads(8), (2, 8));
    assert_eq!(tch::get_num_threads(), 8);
}

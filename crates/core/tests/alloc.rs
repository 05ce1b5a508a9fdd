//! `alloc::keep_freed_memory` in a process of its own, on its main thread (`harness = false`: libtest
//! would run the test on a spawned thread, whose glibc arena always maps blocks over 64 MiB, and other
//! tests' threads would fault pages in meanwhile): a large block freed and allocated again is reused,
//! not page-faulted in afresh.

/// Minor page faults of this process so far (`/proc/self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis start at 3.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after.split_whitespace().nth(7).and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// Allocates `bytes`, touches every page and frees it; returns the minor faults that took.
fn touch_block(bytes: usize) -> u64 {
    let before = minor_faults();
    let mut block = vec![0u8; bytes];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&block);
    drop(block);
    minor_faults() - before
}

fn main() {
    a_freed_large_block_is_reused_without_page_faults();
    println!("alloc: a freed large block is reused without page faults ... ok");
}

fn a_freed_large_block_is_reused_without_page_faults() {
    const BYTES: usize = 64 << 20; // 16384 pages
    let pages = (BYTES / 4096) as u64;
    let first_default = touch_block(BYTES);
    let second_default = touch_block(BYTES);
    // glibc's default: each block is a fresh mmap, faulted in page by page every time.
    assert!(first_default >= pages / 2 && second_default >= pages / 2, "{first_default} {second_default}");

    assert_eq!(tlcv_core::alloc::keep_freed_memory(), cfg!(all(target_os = "linux", target_env = "gnu")));
    let first = touch_block(BYTES);
    let second = touch_block(BYTES);
    assert!(first >= pages / 2, "the heap grows once: {first} faults");
    assert!(second < pages / 20, "the second block reuses the first's pages: {second} faults for {pages} pages");
}

//! Shared helpers: locating the workspace and the store, running commands with context, linking files.

use anyhow::{Context, Result, bail};
use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// The workspace root: `xtask/..` at build time, else the nearest ancestor of the current directory whose
/// `Cargo.toml` declares `[workspace]`.
pub fn workspace_root() -> Result<PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if is_workspace_root(&built) {
        return built.canonicalize().context("canonicalizing the workspace root");
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    cwd.ancestors()
        .find(|d| is_workspace_root(d))
        .map(Path::to_path_buf)
        .with_context(|| format!("no Cargo.toml with [workspace] above {}", cwd.display()))
}

fn is_workspace_root(dir: &Path) -> bool {
    fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|s| s.lines().any(|l| l.trim() == "[workspace]"))
}

/// The project store: `$TLCV_HOME` if set, else `<root>/.tlcv`.
pub fn tlcv_home(root: &Path) -> PathBuf {
    match std::env::var_os("TLCV_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => root.join(".tlcv"),
    }
}

/// Points cargo children at a relocated store (`TLCV_HOME`): libtorch, its libraries and the fixtures.
/// Without `TLCV_HOME` the defaults in `.cargo/config.toml` and the tests already apply.
pub fn store_env(cmd: &mut Command, home: &Path) {
    if std::env::var_os("TLCV_HOME").is_none_or(|h| h.is_empty()) {
        return;
    }
    let lib = home.join("libtorch").join("lib");
    let ld = match std::env::var_os("LD_LIBRARY_PATH") {
        Some(old) if !old.is_empty() => {
            let mut v = lib.into_os_string();
            v.push(":");
            v.push(old);
            v
        }
        _ => lib.into_os_string(),
    };
    cmd.env("LIBTORCH", home.join("libtorch")).env("LD_LIBRARY_PATH", ld);
    if std::env::var_os("TLCV_FIXTURES").is_none() {
        cmd.env("TLCV_FIXTURES", home.join("fixtures"));
    }
}

/// The cargo that runs us (so `cargo +toolchain xtask` stays on that toolchain).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The target directory cargo builds into.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root.join(d),
        _ => root.join("target"),
    }
}

/// A command line as a user would type it.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '$']) {
            s.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Runs a command with inherited stdio and returns its status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status().with_context(|| format!("starting `{}`", show(cmd)))
}

/// Runs a command with inherited stdio and fails unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({st})", show(cmd));
    }
    Ok(())
}

/// Runs a command and returns its stdout; fails unless it succeeds.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", show(cmd), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a file (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a long command with stdout and stderr appended to `log`, printing `label ...` and a plain progress
/// line (elapsed time and the last download the tool reported). On failure the log's tail is in the error.
pub fn run_logged(cmd: &mut Command, log: &Path, label: &str) -> Result<()> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file =
        OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    writeln!(file, "\n=== {} ===", show(cmd)).with_context(|| format!("writing {}", log.display()))?;
    let mut offset = file.seek(SeekFrom::End(0)).with_context(|| format!("seeking {}", log.display()))?;
    let err = file.try_clone().with_context(|| format!("cloning {}", log.display()))?;
    cmd.stdout(file).stderr(err);
    let tty = std::io::stdout().is_terminal();
    println!("  {label} ...");
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting `{}`", show(cmd)))?;
    let mut note = String::new();
    let mut last_draw = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().with_context(|| format!("waiting for `{}`", show(cmd)))? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(200));
        if last_draw.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_draw = Instant::now();
        for line in new_lines(log, &mut offset) {
            if let Some(n) = progress_note(&line) {
                if !tty {
                    println!("    {n}");
                }
                note = n;
            }
        }
        if tty {
            print!("\r\x1b[K    {:>4.0} s  {note}", start.elapsed().as_secs_f64());
            let _ = std::io::stdout().flush();
        }
    };
    if tty {
        print!("\r\x1b[K");
    }
    if !st.success() {
        bail!("`{}` failed ({st}); last lines of {}:\n{}", show(cmd), log.display(), tail(log, 30));
    }
    Ok(())
}

/// Lines appended to `path` since `offset` (which advances to the last complete line).
fn new_lines(path: &Path, offset: &mut u64) -> Vec<String> {
    let mut buf = Vec::new();
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    if f.seek(SeekFrom::Start(*offset)).is_err() || f.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    *offset += end as u64 + 1;
    String::from_utf8_lossy(&buf[..end]).lines().map(str::to_owned).collect()
}

/// A line worth showing as progress: pip's downloads and apt's fetches.
pub fn progress_note(line: &str) -> Option<String> {
    let l = line.trim();
    if l.starts_with("Downloading ") || l.starts_with("Get:") || l.starts_with("Installing collected") {
        let short: String = l.chars().take(110).collect();
        Some(short)
    } else {
        None
    }
}

/// Hard-links `src` to `dst` (replacing `dst`), copying instead when they are on different filesystems.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    if fs::symlink_metadata(dst).is_ok() {
        fs::remove_file(dst).with_context(|| format!("removing {}", dst.display()))?;
    }
    if fs::hard_link(src, dst).is_err() {
        fs::copy(src, dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// True when `a` and `b` exist and have the same length (a hard link or a faithful copy).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.is_file() && y.is_file() && x.len() == y.len(),
        _ => false,
    }
}

/// Sorted names of the entries of `dir` (empty if it does not exist).
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether this process runs as root (uid 0 per `/proc/self/status`).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

/// Whether `prog` is an executable on `PATH`.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// Seconds since `t`, for messages.
pub fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}

#[cfg(test)]
#[allow(clippy::panic)]
pub mod testdir {
    //! Throw-away directories for tests (no tempfile dependency).
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static N: AtomicUsize = AtomicUsize::new(0);

    /// A fresh empty directory under the system temp dir, removed on drop.
    pub struct TestDir(pub PathBuf);

    impl TestDir {
        pub fn new() -> Self {
            let n = N.fetch_add(1, Ordering::SeqCst);
            let p = std::env::temp_dir().join(format!("xtask-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
            TestDir(p)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::testdir::TestDir;
    use super::*;

    #[test]
    fn link_or_copy_replaces_and_shares_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let d = TestDir::new();
        let (a, b) = (d.0.join("a"), d.0.join("b"));
        fs::write(&a, b"hello").unwrap();
        fs::write(&b, b"old contents").unwrap();
        link_or_copy(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"hello");
        assert_eq!(fs::metadata(&a).unwrap().ino(), fs::metadata(&b).unwrap().ino());
        assert!(same_file(&a, &b));
        fs::write(d.0.join("c"), b"hell").unwrap();
        assert!(!same_file(&a, &d.0.join("c")));
        assert!(!same_file(&a, &d.0.join("missing")));
    }

    #[test]
    fn show_quotes_only_what_needs_it() {
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "a b", ""]);
        assert_eq!(show(&c), "apt-get install -y 'a b' ''");
    }

    #[test]
    fn progress_note_picks_downloads() {
        assert!(progress_note("  Downloading torch-2.13.0-cp311.whl (526.3 MB)").is_some());
        assert!(progress_note("Get:1 http://deb.debian.org bookworm/main clang").is_some());
        assert!(progress_note("Requirement already satisfied: numpy").is_none());
    }

    #[test]
    fn new_lines_returns_only_complete_new_lines() {
        let d = TestDir::new();
        let p = d.0.join("log");
        fs::write(&p, "one\ntwo\npart").unwrap();
        let mut off = 0;
        assert_eq!(new_lines(&p, &mut off), vec!["one", "two"]);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        write!(f, "ial\nthree\n").unwrap();
        assert_eq!(new_lines(&p, &mut off), vec!["partial", "three"]);
        assert!(new_lines(&p, &mut off).is_empty());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let d = TestDir::new();
        let p = d.0.join("log");
        fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), "b\nc");
        assert_eq!(tail(&d.0.join("none"), 2), "");
    }
}

//! Where the service binaries under test live.

use std::path::{Path, PathBuf};

/// The path of the binary `name` (`wsauth-auth` or `wsauth-gateway`).
///
/// By default it sits in the target profile dir of the running executable
/// (`target/debug/deps/e2e-…` → `target/debug/`, `target/release/wsauth-bench`
/// → `target/release/`); `WSAUTH_BIN_DIR` overrides that, e.g. to test release
/// builds or an installed copy.
pub fn bin_path(name: &str) -> PathBuf {
    bin_in(None, name)
}

/// [`bin_path`], in `dir` when given.
pub(crate) fn bin_in(dir: Option<&Path>, name: &str) -> PathBuf {
    let dir = match (dir, std::env::var_os("WSAUTH_BIN_DIR")) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(dir)) => PathBuf::from(dir),
        (None, None) => profile_dir(),
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --bins` first (make test does; make bench builds release)",
        path.display()
    );
    path
}

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable knows its own path");
    let mut dir = exe
        .parent()
        .expect("an executable lives in a directory")
        .to_path_buf();
    // Test executables live in `target/<profile>/deps`; binaries one level up.
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

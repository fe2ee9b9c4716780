//! Where the service binaries under test live.

use std::path::PathBuf;

/// The path of the binary `name` (`wsauth-auth` or `wsauth-gateway`).
///
/// By default it sits in the target profile dir of the running test
/// (`target/debug/deps/e2e-…` → `target/debug/`); `WSAUTH_BIN_DIR` overrides
/// that, e.g. to test release builds or an installed copy.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("WSAUTH_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => profile_dir(),
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --bins` first (make test does)",
        path.display()
    );
    path
}

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable knows its own path");
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

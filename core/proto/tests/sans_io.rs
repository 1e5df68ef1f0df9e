//! Enforces that the protocol crate stays sans-IO: its dependency tree has no
//! async runtime, socket or libc crate, and its sources name none of the std
//! items that reach the clock, the file system, the environment, sockets or
//! threads (clippy.toml disallows them too; this catches a `#[allow]`).
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

/// Crates that would give protocol code a way to do I/O on its own.
const FORBIDDEN_CRATES: &[&str] = &[
    "glommio",
    "tokio",
    "async-std",
    "smol",
    "mio",
    "libc",
    "socket2",
    "nix",
    "rustix",
    "io-uring",
    "hyper",
    "redis",
    "fred",
    "rustls",
    "getrandom",
    "rand",
];

/// Source text that would mean protocol code reaches the OS directly.
const FORBIDDEN_TEXT: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "std::fs",
    "std::env",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::thread",
    "std::process",
];

#[test]
fn dependency_tree_has_no_runtime_crate() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("-p")
        .arg("presence-proto")
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("utf-8");
    let crates: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(
        crates.contains(&"presence-proto"),
        "unexpected cargo tree output: {tree}"
    );
    let found: Vec<&&str> = FORBIDDEN_CRATES.iter().filter(|name| crates.contains(name)).collect();
    assert!(
        found.is_empty(),
        "presence-proto must stay sans-IO, but depends on {found:?}:\n{tree}"
    );
}

#[test]
fn sources_name_no_os_facility() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offences = Vec::new();
    visit(&src, &mut |path, text| {
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for needle in FORBIDDEN_TEXT {
                if code.contains(needle) {
                    offences.push(format!("{}:{}: {needle}", path.display(), number + 1));
                }
            }
        }
    });
    assert!(
        offences.is_empty(),
        "protocol code reaches the OS:\n{}",
        offences.join("\n")
    );
}

fn visit(dir: &Path, each: &mut dyn FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            visit(&path, each);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            each(&path, &text);
        }
    }
}

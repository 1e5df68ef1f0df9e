//! End-to-end tests of the data directory with the real binary: one process
//! per directory (a second refuses to start with a clear error, and the
//! lock dies with a killed process), the versioned FORMAT file, rules kept
//! in the data directory across a restart, and runs without durability.

mod common;

use common::http::Mgmt;
use common::Server;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run presenced to its exit (bounded), returning its status and stderr.
fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_presenced"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run presenced");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            use std::io::Read as _;
            let _ = child.stderr.take().expect("piped").read_to_string(&mut stderr);
            return (status, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("presenced kept running on a data directory in use");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ports() -> [&'static str; 4] {
    ["--listen", "127.0.0.1:0", "--mgmt-listen", "127.0.0.1:0"]
}

#[test]
fn a_second_server_on_a_data_directory_in_use_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_str().expect("UTF-8 path");
    let first = Server::start(&["--data-dir", path]);
    let format = std::fs::read_to_string(dir.path().join("FORMAT")).expect("FORMAT written");
    assert!(
        format.starts_with("presenced-data\n") && format.contains("format = 1"),
        "{format}"
    );

    let mut args = ports().to_vec();
    args.extend_from_slice(&["--shards", "1", "--data-dir", path]);
    let (status, stderr) = run_to_exit(&args);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(stderr.contains(path), "the error names the directory: {stderr}");

    // A killed server's lock goes with it: a new one starts at once.
    let _ = first.kill9();
    let again = Server::start(&["--data-dir", path]);
    drop(again);
}

#[test]
fn a_directory_that_is_not_a_data_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("thesis.tex"), "not presenced's").expect("write");
    let mut args = ports().to_vec();
    let path = dir.path().to_str().expect("UTF-8 path");
    args.extend_from_slice(&["--shards", "1", "--data-dir", path]);
    let (status, stderr) = run_to_exit(&args);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a presenced data directory"), "{stderr}");
    assert!(dir.path().join("thesis.tex").exists());
    assert!(
        !dir.path().join("FORMAT").exists(),
        "nothing written into a foreign directory"
    );
}

#[test]
fn ephemeral_servers_run_side_by_side_without_a_data_directory() {
    let mut args = ports().to_vec();
    args.extend_from_slice(&["--shards", "1", "--ephemeral", "--print-config"]);
    let output = Command::new(env!("CARGO_BIN_EXE_presenced"))
        .args(&args)
        .output()
        .expect("run presenced");
    let config = String::from_utf8_lossy(&output.stdout);
    assert!(config.contains("data_dir = \"none\""), "{config}");
    let a = Server::start(&["--ephemeral"]);
    let b = Server::start(&["--data-dir", "none"]);
    assert!(a.data_dir().is_none() && b.data_dir().is_none());
    drop(b);
}

#[test]
fn rules_live_in_the_data_directory_and_survive_a_restart() {
    const TOKEN: &str = "storage-e2e-token";
    const RULES_PATH: &str = "/xcap-root/pres-rules/users/sip:alice@example.com/index";
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token file");
    let (data, token) = (data.to_str().expect("UTF-8"), token.to_str().expect("UTF-8"));
    let rules = r#"<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" xmlns:pr="urn:ietf:params:xml:ns:pres-rules">
 <cr:rule id="r1"><cr:conditions><cr:identity><cr:one id="sip:bob@example.com"/></cr:identity></cr:conditions>
  <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions></cr:rule>
</cr:ruleset>
"#;
    let server = Server::start(&["--data-dir", data, "--mgmt-token-file", token]);
    let put = Mgmt::of(&server).with_token(TOKEN).send(
        "PUT",
        RULES_PATH,
        &[("Content-Type", "application/auth-policy+xml")],
        Some(rules),
    );
    assert_eq!(put.status, 201, "{}", put.body);
    assert!(
        std::path::Path::new(data)
            .join("pres-rules/sip%3Aalice@example.com.xml")
            .exists(),
        "the document is stored in pres-rules/ of the data directory"
    );
    assert!(server.terminate().success());

    let server = Server::start(&["--data-dir", data, "--mgmt-token-file", token]);
    let got = Mgmt::of(&server).with_token(TOKEN).get(RULES_PATH);
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.contains("sip:bob@example.com"), "{}", got.body);
}

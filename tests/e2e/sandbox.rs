//! The newcomer's path: the README's run command with nothing configured, in a fresh copy of
//! the repository, starts a sandbox homeserver and the worker, prints how to try it, and the
//! printed sample knock invites the demo user. Ctrl-C (SIGINT) leaves no process behind.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{enc, free_port, repo_root, request, scratch_dir};

/// The repository's files as a clone would have them (tracked, plus new files not ignored).
fn copy_repo(to: &Path) {
    let root = repo_root();
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(&root)
        .output()
        .expect("git ls-files");
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = std::str::from_utf8(name).expect("utf-8 path");
        let (from, dest) = (root.join(rel), to.join(rel));
        if !from.is_file() {
            continue;
        }
        fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        fs::copy(&from, &dest).expect("copy");
    }
    // What the two README commands install or build is reused rather than installed again:
    // the npm packages, the Synapse venv, and the wasm bundle (the compile itself is the test
    // suite's first step).
    std::os::unix::fs::symlink(root.join("node_modules"), to.join("node_modules")).expect("link");
    fs::create_dir_all(to.join("build")).expect("build dir");
    for f in ["index.js", "index_bg.wasm"] {
        fs::copy(root.join("build").join(f), to.join("build").join(f)).expect("copy bundle");
    }
    fs::write(to.join(".dev.vars"), "").expect("empty .dev.vars");
}

fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn the_run_command_with_nothing_configured_starts_a_working_sandbox() {
    let dir = scratch_dir("newcomer");
    copy_repo(&dir);
    let (port, hs_port) = (free_port(), free_port());
    let mut child = Command::new("bash")
        .arg("scripts/run")
        .current_dir(&dir)
        .env("KNOCK_PORT", port.to_string())
        .env("KNOCK_SANDBOX_HS_PORT", hs_port.to_string())
        .env("KNOCK_RUN_PREBUILT", "1")
        .env(
            "KNOCK_SYNAPSE_VENV",
            repo_root().join("target/synapse-venv"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("scripts/run");
    let pgid = child.id();

    // Read what it prints, as a person would, until the instructions are complete.
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let start = Instant::now();
    while !printed
        .iter()
        .any(|l: &String| l.contains("Press Ctrl-C to stop"))
    {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => printed.push(line),
            Err(_) if start.elapsed() < Duration::from_secs(180) => {}
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-INT", "--", &format!("-{pgid}")])
                    .status();
                panic!("no instructions within 180 s:\n{}", printed.join("\n"));
            }
        }
    }
    let text = printed.join("\n");
    let webhook = format!("http://127.0.0.1:{port}/invite_from_form");
    assert!(
        text.contains(&webhook),
        "the webhook URL is printed:\n{text}"
    );
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/form")),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://127.0.0.1:{hs_port}")),
        "{text}"
    );

    // Post the printed sample knock exactly as printed.
    let sample = printed
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("-d '")
                .and_then(|r| r.strip_suffix('\''))
        })
        .expect("a sample body in the printed curl");
    let r = request(
        "POST",
        &webhook,
        &[("Content-Type", "application/json")],
        Some(sample.as_bytes()),
    );
    assert_eq!(r.status, 202, "{}", r.body);

    // The demo user shows as invited on the sandbox homeserver.
    let state: Value = serde_json::from_str(
        &fs::read_to_string(dir.join(".sandbox/sandbox.json")).expect("state"),
    )
    .expect("json");
    let url = format!(
        "http://127.0.0.1:{hs_port}/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(state["room_id"].as_str().expect("room")),
        enc(state["demo_user_id"].as_str().expect("demo"))
    );
    let auth = format!("Bearer {}", state["bot_token"].as_str().expect("token"));
    crate::support::wait_until("the demo user's invite", Duration::from_secs(30), || {
        let r = request("GET", &url, &[("Authorization", &auth)], None);
        (r.status == 200 && r.json()["membership"] == "invite").then_some(())
    });
    // The space's form: the same knock invites into the space and both of its rooms.
    let space_hook = format!("http://127.0.0.1:{port}/invite_from_form/space");
    assert!(
        text.contains(&space_hook),
        "the space's webhook is printed:\n{text}"
    );
    let again = sample.replace("sandbox-sample-1", "sandbox-sample-space");
    let r = request(
        "POST",
        &space_hook,
        &[("Content-Type", "application/json")],
        Some(again.as_bytes()),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    for key in ["space_id", "second_room_id"] {
        let url = format!(
            "http://127.0.0.1:{hs_port}/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(state[key].as_str().expect("room")),
            enc(state["demo_user_id"].as_str().expect("demo"))
        );
        crate::support::wait_until(
            &format!("the demo user's invite into {key}"),
            Duration::from_secs(30),
            || {
                let r = request("GET", &url, &[("Authorization", &auth)], None);
                (r.status == 200 && r.json()["membership"] == "invite").then_some(())
            },
        );
    }
    let form = request("GET", &format!("http://127.0.0.1:{port}/form"), &[], None);
    assert!(form.body.contains("<form"), "{}", form.body);
    // The moderator page signs in with the admin key it printed.
    let key = text
        .lines()
        .find_map(|l| l.split_once("admin key ").map(|(_, k)| k.trim().to_owned()))
        .expect("the sandbox prints the moderator page's key");
    let r = request(
        "POST",
        &format!("http://127.0.0.1:{port}/admin/login"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(format!("key={key}").as_bytes()),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.headers.contains_key("set-cookie"));

    // Ctrl-C: SIGINT to the whole process group, as a terminal sends it.
    Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        child.try_wait().expect("wait").is_some(),
        "scripts/run did not exit on SIGINT"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while group_alive(pgid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !group_alive(pgid),
        "a process of the sandbox outlived Ctrl-C"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the worker port is free"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", hs_port)).is_err(),
        "the homeserver port is free"
    );
}

//! End-to-end figures for the benchmark report, against a real Synapse and the real worker in
//! `wrangler dev --local`, both on 127.0.0.1 and both started here by the e2e harness.
//!
//! 1. `rejected_knock`: throughput of knocks the address limiter refuses (429) against `GET /`
//!    under the same `wrk` load.
//! 2. `accepted_latency`: knock → `invite` membership in Synapse, against the same invite sent
//!    straight to Synapse by the bot.
//! 3. `bundle`: raw and `gzip -9` size of `build/index_bg.wasm`.
//! 4. `cold_start`: spawning `wrangler dev` on the prebuilt bundle until the first 200 from `/`.
//!
//! Only measures: the goals are judged by `scripts/bench`, which runs this binary as
//! `cargo bench --bench e2e_report` with `KNOCK_BENCH_JSON=<path>` and merges the figures into
//! `target/bench/summary.json`. `KNOCK_BENCH_QUICK=1` makes every stage short. A stage that
//! cannot run is recorded as `{"ok": false, "error": ...}` and the others still run; the exit
//! code is non-zero when any stage failed.

#[path = "../tests/e2e/support.rs"]
mod support;

use std::fs;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use support::{enc, free_port, repo_root, scratch_dir, wrangler_dev, Guarded, Synapse, Worker};

/// The address that is pushed over its limit before the load runs (TEST-NET-2).
const LIMITED_ADDRESS: &str = "198.51.100.77";

struct Mode {
    quick: bool,
    /// `wrk -d`, in seconds, of each measured run.
    wrk_secs: u32,
    /// `wrk -d` of each unmeasured warm-up run.
    warmup_secs: u32,
    latency_samples: usize,
    cold_starts: usize,
}

impl Mode {
    fn from_env() -> Mode {
        let quick = std::env::var("KNOCK_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Mode {
                quick,
                wrk_secs: 2,
                warmup_secs: 1,
                latency_samples: 5,
                cold_starts: 1,
            }
        } else {
            Mode {
                quick,
                wrk_secs: 10,
                warmup_secs: 3,
                latency_samples: 30,
                cold_starts: 3,
            }
        }
    }
}

fn out_dir() -> PathBuf {
    let dir = std::env::var_os("KNOCK_BENCH_JSON")
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(Path::to_owned))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| repo_root().join("target/bench"));
    fs::create_dir_all(&dir).expect("create the bench output directory");
    dir
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| e.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

/// Runs one stage; a panic becomes `{"ok": false, "error": ...}`.
fn stage(name: &str, f: impl FnOnce() -> Value) -> Value {
    eprintln!("e2e_report: {name} ...");
    let started = Instant::now();
    let mut v = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => json!({ "ok": false, "error": panic_text(&*e) }),
    };
    if let Value::Object(m) = &mut v {
        m.entry("ok").or_insert(Value::Bool(true));
        m.insert(
            "stage_seconds".into(),
            json!(round(started.elapsed().as_secs_f64(), 1)),
        );
    }
    eprintln!("e2e_report: {name}: {v}");
    v
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

fn set_var(vars: &mut Vec<(String, String)>, key: &str, value: &str) {
    vars.retain(|(k, _)| k != key);
    vars.push((key.into(), value.into()));
}

// ---------------------------------------------------------------------------------------------
// 1. Rejected knocks against GET / under the same wrk load

/// A wrk script that sends one fixed request and counts the replies with `expected` status
/// apart from all others. `done` prints one `KNOCK_WRK {json}` line.
fn wrk_script(
    path: &Path,
    method: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    expected: u16,
) {
    let lua_string = |s: &str| format!("{s:?}"); // ASCII only here: Rust's escapes are Lua's.
    let mut lua = String::from("-- Written by benches/e2e_report.rs; rewritten on every run.\n");
    lua.push_str(&format!("wrk.method = {}\n", lua_string(method)));
    if let Some(b) = body {
        lua.push_str(&format!("wrk.body = {}\n", lua_string(b)));
    }
    for (k, v) in headers {
        lua.push_str(&format!(
            "wrk.headers[{}] = {}\n",
            lua_string(k),
            lua_string(v)
        ));
    }
    lua.push_str(&format!(
        r#"
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  expected_n = 0
  other_n = 0
end
function response(status, headers, body)
  if status == {expected} then
    expected_n = expected_n + 1
  else
    other_n = other_n + 1
  end
end
function done(summary, latency, requests)
  local expected, other = 0, 0
  for _, t in ipairs(threads) do
    expected = expected + t:get("expected_n")
    other = other + t:get("other_n")
  end
  local e = summary.errors
  io.write(string.format(
    'KNOCK_WRK {{"requests":%d,"duration_us":%d,"expected_status":%d,"other_status":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"latency_p50_us":%d,"latency_p99_us":%d}}\n',
    summary.requests, summary.duration, expected, other,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#
    ));
    fs::write(path, lua).expect("write the wrk script");
}

/// Runs wrk (loopback only, bounded by `-d`) and returns its figures plus the command line.
fn run_wrk(url: &str, script: &Path, secs: u32, log: &Path) -> Value {
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "wrk only ever targets loopback"
    );
    let args = [
        "-t2".to_string(),
        "-c16".to_string(),
        format!("-d{secs}s"),
        "--timeout".to_string(),
        "5s".to_string(),
        "-s".to_string(),
        script.display().to_string(),
        url.to_string(),
    ];
    let out = Command::new("wrk")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk (scripts/bench installs it): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut f = fs::File::create(log).expect("wrk log");
    let _ = writeln!(f, "$ wrk {}\n{stdout}{stderr}", args.join(" "));
    assert!(
        out.status.success(),
        "wrk exited with {}: {stdout}{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("KNOCK_WRK "))
        .unwrap_or_else(|| panic!("wrk printed no summary line: {stdout}{stderr}"));
    let mut v: Value = serde_json::from_str(line).expect("wrk summary JSON");
    let requests = v["requests"].as_f64().unwrap_or(0.0);
    let secs = v["duration_us"].as_f64().unwrap_or(0.0) / 1e6;
    let errors = [
        "other_status",
        "connect_errors",
        "read_errors",
        "write_errors",
        "timeouts",
    ]
    .iter()
    .map(|k| v[*k].as_u64().unwrap_or(0))
    .sum::<u64>();
    let m = v.as_object_mut().expect("object");
    m.insert(
        "rps".into(),
        json!(round(if secs > 0.0 { requests / secs } else { 0.0 }, 1)),
    );
    m.insert("errors".into(), json!(errors));
    m.insert(
        "command".into(),
        json!(format!("wrk {}", args.join(" ")).replace(&*repo_root().to_string_lossy(), ".")),
    );
    v
}

fn rejected_knock(mode: &Mode, s: &Synapse, dir: &Path) -> Value {
    let mut vars = Worker::base_vars(s);
    set_var(&mut vars, "MAX_REQUESTS_PER_WINDOW", "1");
    set_var(&mut vars, "RATE_LIMIT_WINDOW", "1h");
    let w = Worker::start(&vars);
    let user = s.new_user("benchlimited");
    let body = json!({ "matrix_id": user.user_id }).to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("CF-Connecting-IP", LIMITED_ADDRESS),
    ];
    let first = w.post("/invite_from_form", &headers, body.as_bytes());
    assert_eq!(
        first.status, 202,
        "the first knock from {LIMITED_ADDRESS} should be accepted: {}",
        first.body
    );
    let check = w.post("/invite_from_form", &headers, body.as_bytes());
    assert_eq!(
        check.status, 429,
        "a knock over the limit should be refused with 429: {}",
        check.body
    );
    let health = w.get("/", &[]);
    assert_eq!(health.status, 200, "GET /: {}", health.body);

    let get_lua = dir.join("wrk-health.lua");
    let post_lua = dir.join("wrk-rejected-knock.lua");
    wrk_script(&get_lua, "GET", None, &[], 200);
    wrk_script(&post_lua, "POST", Some(&body), &headers, 429);
    let health_url = format!("{}/", w.url);
    let knock_url = format!("{}/invite_from_form", w.url);

    // Unmeasured warm-up of both paths, then one measured run each.
    run_wrk(
        &health_url,
        &get_lua,
        mode.warmup_secs,
        &dir.join("wrk-warmup-health.txt"),
    );
    run_wrk(
        &knock_url,
        &post_lua,
        mode.warmup_secs,
        &dir.join("wrk-warmup-rejected.txt"),
    );
    let health = run_wrk(
        &health_url,
        &get_lua,
        mode.wrk_secs,
        &dir.join("wrk-health.txt"),
    );
    let rejected = run_wrk(
        &knock_url,
        &post_lua,
        mode.wrk_secs,
        &dir.join("wrk-rejected.txt"),
    );
    // The limit still holds after the load.
    let after = w.post("/invite_from_form", &headers, body.as_bytes());
    let health_rps = health["rps"].as_f64().unwrap_or(0.0);
    let rejected_rps = rejected["rps"].as_f64().unwrap_or(0.0);
    assert!(
        health_rps > 0.0 && rejected_rps > 0.0,
        "wrk completed no requests: GET / {health}, knock {rejected}"
    );
    json!({
        "health_rps": health_rps,
        "rejected_rps": rejected_rps,
        "ratio": round(health_rps / rejected_rps, 3),
        "health_errors": health["errors"],
        "rejected_errors": rejected["errors"],
        "check_status": check.status,
        "status_after_load": after.status,
        "health": health,
        "rejected": rejected,
        "load": format!("wrk -t2 -c16 -d{}s on 127.0.0.1, after a {}s warm-up of each path", mode.wrk_secs, mode.warmup_secs),
        "note": "MAX_REQUESTS_PER_WINDOW=1, RATE_LIMIT_WINDOW=1h; one accepted knock puts the address over its limit, then every knock from it is answered 429. Errors are replies other than the expected status (200 for GET /, 429 for the knock) plus socket errors and timeouts.",
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Accepted knock → invite, against the same invite sent straight to Synapse

/// Polls the user's membership every 5 ms until it reads `invite`; returns when it did.
fn wait_invited(s: &Synapse, room: &str, user_id: &str) -> Instant {
    let start = Instant::now();
    loop {
        if s.membership(room, user_id).as_deref() == Some("invite") {
            return Instant::now();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{user_id} was not invited to {room} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn baseline_sample(s: &Synapse, room: &str, user_id: &str) -> f64 {
    let t0 = Instant::now();
    let r = s.client(
        "POST",
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)),
        &s.bot.token,
        Some(json!({ "user_id": user_id })),
    );
    assert_eq!(r.status, 200, "direct invite: {}", r.body);
    ms(wait_invited(s, room, user_id) - t0)
}

/// (until the worker's 202, until Synapse reports the invite), in ms.
fn knock_sample(s: &Synapse, w: &Worker, room: &str, user_id: &str, i: usize) -> (f64, f64) {
    let address = format!("203.0.113.{}", i % 250 + 1);
    let body = json!({ "matrix_id": user_id }).to_string();
    let t0 = Instant::now();
    let r = w.post(
        "/invite_from_form",
        &[
            ("Content-Type", "application/json"),
            ("CF-Connecting-IP", &address),
        ],
        body.as_bytes(),
    );
    let accepted = ms(t0.elapsed());
    assert_eq!(r.status, 202, "knock: {}", r.body);
    (accepted, ms(wait_invited(s, room, user_id) - t0))
}

fn summary(samples: &[f64]) -> Value {
    let s = sorted(samples);
    json!({
        "p50_ms": round(percentile(&s, 0.50), 2),
        "p95_ms": round(percentile(&s, 0.95), 2),
        "min_ms": round(s[0], 2),
        "max_ms": round(s[s.len() - 1], 2),
        "samples_ms": samples.iter().map(|x| round(*x, 2)).collect::<Vec<_>>(),
    })
}

fn accepted_latency(mode: &Mode, s: &Synapse) -> Value {
    // Two fresh rooms of the same kind, so both sides start from the same state.
    let knock_room = s.create_knock_room(&s.bot);
    let baseline_room = s.create_knock_room(&s.bot);
    let mut vars = Worker::base_vars(s);
    set_var(&mut vars, "NEW_ROOM_ID", &knock_room);
    assert!(
        vars.iter().any(|(k, v)| k == "REQUEST_DELAY" && v == "0"),
        "the harness's base vars should set REQUEST_DELAY=0"
    );
    let w = Worker::start(&vars);
    let n = mode.latency_samples;
    // One unmeasured warm-up pair, then n pairs; every sample has a user of its own.
    let users: Vec<_> = (0..2 * (n + 1)).map(|_| s.new_user("benchlat")).collect();
    baseline_sample(s, &baseline_room, &users[0].user_id);
    knock_sample(s, &w, &knock_room, &users[1].user_id, 0);
    let (mut baseline, mut knock) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut accept = Vec::with_capacity(n);
    let mut paired = Vec::with_capacity(n);
    for i in 0..n {
        let b_user = &users[2 * (i + 1)].user_id;
        let k_user = &users[2 * (i + 1) + 1].user_id;
        // Interleaved, alternating which goes first.
        let (b, k) = if i % 2 == 0 {
            let b = baseline_sample(s, &baseline_room, b_user);
            (b, knock_sample(s, &w, &knock_room, k_user, i + 1))
        } else {
            let k = knock_sample(s, &w, &knock_room, k_user, i + 1);
            (baseline_sample(s, &baseline_room, b_user), k)
        };
        let (a, k) = k;
        baseline.push(b);
        knock.push(k);
        accept.push(a);
        paired.push(k - b);
    }
    let b = summary(&baseline);
    let k = summary(&knock);
    let p = sorted(&paired);
    json!({
        "samples": n,
        "baseline": b,
        "knock": k,
        "knock_accepted": summary(&accept),
        "overhead_p50_ms": round(k["p50_ms"].as_f64().unwrap_or(0.0) - b["p50_ms"].as_f64().unwrap_or(0.0), 2),
        "overhead_p95_ms": round(k["p95_ms"].as_f64().unwrap_or(0.0) - b["p95_ms"].as_f64().unwrap_or(0.0), 2),
        "paired_difference_median_ms": round(percentile(&p, 0.5), 2),
        "note": "The worker's REQUEST_DELAY is 0 for this measurement. Knock makes two homeserver calls (profile check + invite) where the baseline (the bot's POST /rooms/{room}/invite straight to Synapse) makes one. Both are timed from sending the request until GET /rooms/{room}/state/m.room.member/{user}, polled every 5 ms, reads `invite`; every sample uses a fresh user, baseline and Knock each have a fresh room, samples are interleaved after one unmeasured warm-up pair. Percentiles are nearest-rank. `knock_accepted` is the part until the worker's 202 reply (the knock stored in the room's Durable Object); the rest is the queue's alarm, the profile check and the invite.",
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Bundle size

fn gzip9_len(path: &Path) -> u64 {
    let out = Command::new("gzip")
        .arg("-9c")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run gzip: {e}"));
    assert!(out.status.success(), "gzip -9 {} failed", path.display());
    out.stdout.len() as u64
}

fn bundle() -> Value {
    let wasm = repo_root().join("build/index_bg.wasm");
    let js = repo_root().join("build/index.js");
    let raw = fs::metadata(&wasm)
        .unwrap_or_else(|e| panic!("{}: {e} (build it with scripts/build.sh)", wasm.display()))
        .len();
    let gz = gzip9_len(&wasm);
    let mut v = json!({
        "wasm_raw_bytes": raw,
        "wasm_gzip_bytes": gz,
        "path": "build/index_bg.wasm",
    });
    if let Ok(meta) = fs::metadata(&js) {
        v["js_raw_bytes"] = json!(meta.len());
        v["js_gzip_bytes"] = json!(gzip9_len(&js));
    }
    v
}

// ---------------------------------------------------------------------------------------------
// 4. Cold start

/// Spawns `wrangler dev --local` on the prebuilt bundle with `config` (as the harness does),
/// on a fresh state directory, and times it until `GET /` first answers 200 (polled every
/// 10 ms). Returns the time, or Err with the log when a port was taken meanwhile.
fn cold_start_once(config: &Path) -> Result<Duration, String> {
    let dir = scratch_dir("coldstart");
    let port = free_port();
    let mut cmd = wrangler_dev(port, &dir.join("state"), config);
    let url = format!("http://127.0.0.1:{port}/");
    let probe = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let t0 = Instant::now();
    let mut process = Guarded::spawn("INT", &mut cmd, &dir.join("wrangler.log"));
    loop {
        if let Ok(r) = probe.get(&url).call() {
            if r.status() == 200 {
                let elapsed = t0.elapsed();
                process.stop();
                return Ok(elapsed);
            }
        }
        let tail = process.log_tail();
        if tail.contains("Address already in use") {
            process.stop();
            return Err(tail);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "wrangler dev did not answer 200 within 90 s:\n{tail}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cold_start(mode: &Mode, s: Option<&Synapse>) -> Value {
    let vars = match s {
        Some(s) => Worker::base_vars(s),
        // A valid configuration without a homeserver: GET / never calls one.
        None => [
            ("NEW_ROOM_ID", "!coldstart:localhost"),
            ("MATRIX_BASE_URL", "http://127.0.0.1:9"),
            ("MATRIX_ACCESS_TOKEN", "cold-start"),
            ("REQUEST_DELAY", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    // One unmeasured start through the harness writes the config and warms the file cache.
    let mut w = Worker::start(&vars);
    w.stop();
    let mut samples = Vec::new();
    for _ in 0..mode.cold_starts {
        let mut tries = 0;
        let d = loop {
            match cold_start_once(&w.config) {
                Ok(d) => break d,
                Err(log) if tries < 2 => {
                    tries += 1;
                    eprintln!("e2e_report: cold start hit a taken port, retrying: {log}");
                }
                Err(log) => panic!("wrangler dev did not start:\n{log}"),
            }
        };
        samples.push(ms(d));
    }
    let s_sorted = sorted(&samples);
    json!({
        "median_ms": round(percentile(&s_sorted, 0.5), 1),
        "samples_ms": samples.iter().map(|x| round(*x, 1)).collect::<Vec<_>>(),
        "runs": mode.cold_starts,
        "homeserver": if s.is_some() { "the bench Synapse" } else { "none (Synapse did not start)" },
        "note": "Local proxy for a cold start: spawning `wrangler dev --local` (node + workerd) on the prebuilt bundle with a fresh state directory, until GET / first answers 200 (polled every 10 ms; the first GET / also makes the worker's session Durable Object call). Dominated by wrangler and workerd starting, not only by the wasm instantiation; not Cloudflare's edge cold start.",
    })
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let mode = Mode::from_env();
    let dir = out_dir();
    let started = Instant::now();
    let mut stages = Map::new();

    stages.insert("bundle".into(), stage("bundle", bundle));

    let synapse: Result<&'static Synapse, String> =
        catch_unwind(support::synapse).map_err(|e| panic_text(&*e));
    let needs_synapse = |f: &dyn Fn(&'static Synapse) -> Value| match &synapse {
        Ok(s) => f(s),
        Err(e) => json!({ "ok": false, "error": format!("Synapse did not start: {e}") }),
    };
    stages.insert(
        "rejected_knock".into(),
        stage("rejected_knock", || {
            needs_synapse(&|s| rejected_knock(&mode, s, &dir))
        }),
    );
    stages.insert(
        "accepted_latency".into(),
        stage("accepted_latency", || {
            needs_synapse(&|s| accepted_latency(&mode, s))
        }),
    );
    stages.insert(
        "cold_start".into(),
        stage("cold_start", || {
            cold_start(&mode, synapse.as_ref().ok().copied())
        }),
    );

    let failed: Vec<String> = stages
        .iter()
        .filter(|(_, v)| v["ok"] != Value::Bool(true))
        .map(|(k, _)| k.clone())
        .collect();
    let report = json!({
        "mode": if mode.quick { "quick" } else { "full" },
        "seconds": round(started.elapsed().as_secs_f64(), 1),
        "stages": stages,
        "failed_stages": failed,
    });
    let text = serde_json::to_string_pretty(&report).expect("report JSON");
    match std::env::var_os("KNOCK_BENCH_JSON") {
        Some(path) => {
            fs::write(&path, text + "\n")
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", PathBuf::from(&path).display()));
            eprintln!(
                "e2e_report: figures written to {}",
                PathBuf::from(&path).display()
            );
        }
        None => println!("{text}"),
    }
    if !failed.is_empty() {
        eprintln!("e2e_report: stages that did not run: {}", failed.join(", "));
        std::process::exit(1);
    }
}

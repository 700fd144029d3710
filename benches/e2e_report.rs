//! End-to-end figures for the benchmark report, against a real Synapse and the real worker in
//! `wrangler dev --local`, both on 127.0.0.1 and both started here by the e2e harness.
//!
//! 1. `rejected_knock`: throughput of knocks the address limiter refuses (429) against `GET /`
//!    under the same `wrk` load.
//! 2. `accepted_latency`: knock → `invite` membership in Synapse, against the same invite sent
//!    straight to Synapse by the bot.
//! 3. `bundle`: raw and `gzip -9` size of `build/index_bg.wasm`.
//! 4. `cold_start`: spawning `wrangler dev` on the prebuilt bundle until the first 200 from `/`.
//! 5. `hot_path_cpu`: CPU time per request in the workerd process that runs the worker (from
//!    `/proc/<pid>/task/*/schedstat`), for `GET /`, a rejected (429), an accepted and a blocked
//!    knock, in interleaved rounds of the same run.
//! 6. `cron_rooms`: cron runs over a deployment of 20 rooms (`KNOCK_ROOMS`): the subrequests of
//!    the cron invocation (one room call each), the calls each room's own invocation made, and
//!    the CPU of the worker's workerd per run, beside `GET /` in the same run.
//! 7. `reaction_latency`: a moderator's ✅ on a held knock's notice in the management room →
//!    `invite` in Synapse, with the one-minute cron triggered on its schedule, beside the bot's
//!    direct invite in the same run.
//! 8. `list_scale`: the block-list at 1k, 10k and 100k entries: the first knock after a change,
//!    a warm knock and one with an empty list (workerd CPU), the compiled index's size, the list
//!    object's CPU per change (see `e2e_report/list_scale.rs`).
//!
//! Only measures: the goals are judged by `scripts/bench`, which runs this binary as
//! `cargo bench --bench e2e_report` with `KNOCK_BENCH_JSON=<path>` and merges the figures into
//! `target/bench/summary.json`. `KNOCK_BENCH_QUICK=1` makes every stage short. A stage that
//! cannot run is recorded as `{"ok": false, "error": ...}` and the others still run; the exit
//! code is non-zero when any stage failed. `KNOCK_BENCH_STAGES=hot_path_cpu,bundle` (names
//! separated by commas) runs only those stages, for measuring one change quickly; the others
//! are left out of the figures.

#[path = "e2e_report/list_scale.rs"]
mod list_scale;
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
// 5. Hot-path CPU: nanoseconds on CPU in the worker's workerd process per request, by kind

/// The admin key and webhook secret of the hot-path worker.
const CPU_API_KEY: &str = "bench-cpu-admin-key";
const CPU_WEBHOOK_SECRET: &str = "bench-cpu-webhook-secret";
const CPU_TALLY_SECRET: &str = "bench-cpu-tally-secret";
/// The address pushed over its limit for the rejected knocks (TEST-NET-3).
const CPU_LIMITED_ADDRESS: &str = "203.0.113.77";
/// Blocked knocks come from unique Matrix IDs under this glob (see `hot_path_cpu`).
const CPU_BLOCKED_GLOB: &str = "@cpublocked-*:localhost";
/// A quiet window: the worker's workerd used less than `QUIET_NS` of CPU in `QUIET_WINDOW`.
const QUIET_WINDOW: Duration = Duration::from_millis(100);
const QUIET_NS: u64 = 200_000;
/// Consecutive quiet windows before a batch counts as finished (deferred work included).
const QUIET_WINDOWS: usize = 3;
/// Connections of the concurrent kinds (each sends its share of the batch one at a time).
const CPU_CONCURRENCY: usize = 8;

/// The pids of one `wrangler dev` under this process.
#[derive(Debug)]
struct DevProcesses {
    /// The workerd that runs the worker (and its Durable Objects).
    worker: u32,
    /// The workerd that runs wrangler's own proxy, on the dev port.
    proxy: u32,
    /// wrangler's node processes (the launcher and the CLI).
    nodes: Vec<u32>,
    cmdlines: Value,
}

fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Direct children, from every thread's `/proc/<pid>/task/<tid>/children`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(t.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|x| x.parse::<u32>().ok()),
                );
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn descendants(root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = children(root);
    while let Some(p) = todo.pop() {
        out.push(p);
        todo.extend(children(p));
    }
    out
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Finds the processes of the `wrangler dev` started with this `--config` and `--port`, among
/// this bench's own descendants only: its node processes (matched on both arguments), and the
/// workerd processes that are their direct children. wrangler 4 starts two: one runs wrangler's
/// proxy and binds the dev port (`--socket-addr=entry=127.0.0.1:<port>`); the other runs the
/// worker, its Durable Objects and miniflare's entry worker, on a port of its own.
fn find_dev_processes(config: &Path, port: u16) -> DevProcesses {
    let config = config.to_string_lossy().into_owned();
    let port_arg = port.to_string();
    let mine = descendants(std::process::id());
    let nodes: Vec<u32> = mine
        .iter()
        .copied()
        .filter(|p| {
            let a = cmdline(*p);
            a.first()
                .and_then(|x| Path::new(x).file_name())
                .is_some_and(|n| n == "node")
                && a.iter().any(|x| x.contains("wrangler"))
                && arg_after(&a, "--config") == Some(config.as_str())
                && arg_after(&a, "--port") == Some(port_arg.as_str())
        })
        .collect();
    assert!(
        !nodes.is_empty(),
        "no wrangler process with --config {config} --port {port} under this bench"
    );
    let is_workerd = |a: &[String]| {
        a.first()
            .and_then(|p| Path::new(p).file_name())
            .is_some_and(|n| n == "workerd")
            && a.get(1).map(String::as_str) == Some("serve")
    };
    let workerds: Vec<(u32, Vec<String>)> = nodes
        .iter()
        .flat_map(|n| children(*n))
        .map(|p| (p, cmdline(p)))
        .filter(|(_, a)| is_workerd(a))
        .collect();
    let entry = format!("--socket-addr=entry=127.0.0.1:{port}");
    let (proxies, workers): (Vec<_>, Vec<_>) =
        workerds.iter().partition(|(_, a)| a.contains(&entry));
    let show = |list: &[&(u32, Vec<String>)]| {
        list.iter()
            .map(|(p, a)| format!("{p}: {}", a.join(" ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        proxies.len() == 1 && workers.len() == 1,
        "expected one workerd on the dev port (wrangler's proxy) and one other (the worker) \
         under wrangler {nodes:?}; found proxy:\n{}\nothers:\n{}",
        show(&proxies),
        show(&workers)
    );
    let root = repo_root().to_string_lossy().into_owned();
    let line = |p: u32| cmdline(p).join(" ").replace(&root, ".");
    DevProcesses {
        worker: workers[0].0,
        proxy: proxies[0].0,
        cmdlines: json!({
            "worker_workerd": { "pid": workers[0].0, "cmdline": line(workers[0].0) },
            "proxy_workerd": { "pid": proxies[0].0, "cmdline": line(proxies[0].0) },
            "node": nodes.iter().map(|p| json!({ "pid": p, "cmdline": line(*p) })).collect::<Vec<_>>(),
        }),
        nodes,
    }
}

/// Nanoseconds on CPU of every thread of `pid` (the first field of each thread's `schedstat`),
/// and the thread ids.
fn cpu_ns(pid: u32) -> (u64, Vec<u32>) {
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    let mut total = 0;
    let mut tids = Vec::new();
    for t in tasks.flatten() {
        // A thread may end between the listing and the read: it then counts as gone.
        if let Ok(text) = fs::read_to_string(t.path().join("schedstat")) {
            if let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
            {
                total += ns;
                if let Some(tid) = t.file_name().to_str().and_then(|x| x.parse().ok()) {
                    tids.push(tid);
                }
            }
        }
    }
    tids.sort_unstable();
    (total, tids)
}

#[derive(Clone)]
struct CpuReading {
    worker: u64,
    proxy: u64,
    node: u64,
    worker_tids: Vec<u32>,
    /// The worker's workerd as `/proc/<pid>/stat` counts it, in clock ticks: user, system.
    worker_ticks: (u64, u64),
}

/// utime and stime of the whole process (exited threads included), in clock ticks.
fn stat_ticks(pid: u32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // state is field 3 of stat, so utime (14) and stime (15) are at 11 and 12 here.
    (f[11], f[12])
}

impl DevProcesses {
    fn read(&self) -> CpuReading {
        let (worker, worker_tids) = cpu_ns(self.worker);
        CpuReading {
            worker,
            proxy: cpu_ns(self.proxy).0,
            node: self.nodes.iter().map(|p| cpu_ns(*p).0).sum(),
            worker_tids,
            worker_ticks: stat_ticks(self.worker),
        }
    }

    /// Waits until the worker's workerd has been quiet for `QUIET_WINDOWS` windows in a row.
    /// Returns (the reading where the quiet stretch began, the latest reading): the first ends
    /// a batch, deferred work included; the second starts one.
    fn settle(&self) -> (CpuReading, CpuReading) {
        let started = Instant::now();
        let mut history = vec![self.read()];
        loop {
            std::thread::sleep(QUIET_WINDOW);
            history.push(self.read());
            let n = history.len();
            if n > QUIET_WINDOWS
                && (n - 1 - QUIET_WINDOWS..n - 1)
                    .all(|i| history[i + 1].worker.saturating_sub(history[i].worker) < QUIET_NS)
            {
                return (
                    history[n - 1 - QUIET_WINDOWS].clone(),
                    history[n - 1].clone(),
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the worker's workerd did not go quiet within 120 s"
            );
        }
    }
}

/// One request on a kept-alive connection; returns the status (the body is read to the end).
fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> u16 {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let _ = resp.into_string();
    status
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CpuKind {
    /// `GET /` on the worker: the baseline.
    Get,
    /// A knock the address limiter refuses (429).
    Rejected,
    /// A signed knock from a new Matrix ID and a new address, with the queue's work after it.
    Accepted,
    /// A signed knock from a Matrix ID on the block-list (answered 202: a shadow block).
    Blocked,
    /// `Accepted`, but signed as a Tally delivery: the same path without the address limiter's
    /// object (a platform-signed delivery is limited per ID and by the join-wave breaker).
    AcceptedSigned,
    /// `GET /` on a trivial JavaScript worker under the same `wrangler dev`: the floor.
    Floor,
    /// The same JavaScript worker's bare version of an accepted knock's hops: a JSON POST
    /// forwarded to a SQLite-backed Durable Object that stores a row and sets an alarm, whose
    /// alarm asks Synapse for the profile and stores the answer's status on the row. What the architecture costs in
    /// this local stack before any of Knock's own work.
    FloorKnock,
    /// `GET /` on Knock over `CPU_CONCURRENCY` connections at once.
    GetConcurrent,
    /// Rejected knocks over `CPU_CONCURRENCY` connections at once.
    RejectedConcurrent,
}

impl CpuKind {
    const ALL: [CpuKind; 9] = [
        CpuKind::Get,
        CpuKind::Rejected,
        CpuKind::Accepted,
        CpuKind::Blocked,
        CpuKind::AcceptedSigned,
        CpuKind::Floor,
        CpuKind::FloorKnock,
        CpuKind::GetConcurrent,
        CpuKind::RejectedConcurrent,
    ];

    fn key(self) -> &'static str {
        match self {
            CpuKind::Get => "get",
            CpuKind::Rejected => "rejected",
            CpuKind::Accepted => "accepted",
            CpuKind::Blocked => "blocked",
            CpuKind::AcceptedSigned => "accepted_signed",
            CpuKind::Floor => "floor",
            CpuKind::FloorKnock => "floor_knock",
            CpuKind::GetConcurrent => "get_concurrent",
            CpuKind::RejectedConcurrent => "rejected_concurrent",
        }
    }

    /// The kind this one is compared with: `GET /` on Knock at the same concurrency.
    fn baseline(self) -> CpuKind {
        match self {
            CpuKind::GetConcurrent | CpuKind::RejectedConcurrent => CpuKind::GetConcurrent,
            _ => CpuKind::Get,
        }
    }
}

/// One batch's figures, per request.
struct Batch {
    requests: usize,
    worker_ns: f64,
    proxy_ns: f64,
    node_ns: f64,
    wall_us: f64,
    /// CPU of the drain checks (GET /knocks) that ran inside the batch, taken out of it.
    excluded_ns: u64,
    drain_checks: u32,
    threads_changed: bool,
    /// The whole batch in the worker's workerd: schedstat ns, and user and system ticks.
    worker_total_ns: u64,
    worker_ticks: (u64, u64),
}

/// Runs `batch` (which sends its requests and returns how many), then waits until the workerd
/// is quiet (and, with `drained`, until it says the queue is empty), and divides the CPU used by
/// the number of requests.
fn cpu_batch(
    procs: &DevProcesses,
    batch: &mut dyn FnMut() -> usize,
    drained: Option<&dyn Fn() -> bool>,
) -> Batch {
    let (_, before) = procs.settle();
    let t0 = Instant::now();
    let n = batch();
    assert!(n > 0, "an empty batch");
    let wall = t0.elapsed();
    let mut excluded = CpuReading {
        worker: 0,
        proxy: 0,
        node: 0,
        worker_tids: Vec::new(),
        worker_ticks: (0, 0),
    };
    let mut checks = 0;
    let after = loop {
        let (after, _) = procs.settle();
        let Some(check) = drained else { break after };
        // The check is itself a request to the worker: its CPU is measured and taken out.
        let c0 = procs.read();
        let done = check();
        let c1 = procs.read();
        checks += 1;
        if done {
            break after;
        }
        excluded.worker += c1.worker - c0.worker;
        excluded.proxy += c1.proxy - c0.proxy;
        excluded.node += c1.node - c0.node;
        assert!(checks < 600, "the knock queue did not drain");
    };
    let per = |a: u64, b: u64, x: u64| (a.saturating_sub(b).saturating_sub(x)) as f64 / n as f64;
    Batch {
        requests: n,
        worker_ns: per(after.worker, before.worker, excluded.worker),
        proxy_ns: per(after.proxy, before.proxy, excluded.proxy),
        node_ns: per(after.node, before.node, excluded.node),
        wall_us: wall.as_secs_f64() * 1e6 / n as f64,
        excluded_ns: excluded.worker,
        drain_checks: checks,
        threads_changed: before.worker_tids != after.worker_tids,
        worker_total_ns: after.worker - before.worker,
        worker_ticks: (
            after.worker_ticks.0 - before.worker_ticks.0,
            after.worker_ticks.1 - before.worker_ticks.1,
        ),
    }
}

/// A trivial JavaScript worker under `wrangler dev --local`, as the harness starts Knock: what
/// any worker costs in this local stack. `GET /` is one fixed JSON reply; `POST /knock` is the
/// bare shape of an accepted knock (see [`CpuKind::FloorKnock`]), against `synapse` with
/// `token`, each row keeping the status Synapse answered; `GET /knocks` counts the rows by that
/// status (`pending` before the alarm asked).
fn start_floor_worker(synapse: &str, token: &str) -> (Guarded, String, PathBuf, u16) {
    let js = r#"
export class Room {
  constructor(state, env) {
    this.state = state;
    this.env = env;
    this.sql = state.storage.sql;
    this.sql.exec("CREATE TABLE IF NOT EXISTS knocks (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, answer INTEGER)");
  }
  async fetch(request) {
    if (request.method === "GET") {
      const rows = this.sql.exec("SELECT answer, count(*) AS n FROM knocks GROUP BY answer").toArray();
      return Response.json(Object.fromEntries(rows.map((r) => [r.answer === null ? "pending" : String(r.answer), r.n])));
    }
    const knock = await request.json();
    const row = this.sql.exec("INSERT INTO knocks (user_id) VALUES (?) RETURNING id", knock.user_id).one();
    await this.state.storage.setAlarm(Date.now());
    return Response.json({ outcome: "queued", knock_id: row.id });
  }
  async alarm() {
    for (const k of this.sql.exec("SELECT id, user_id FROM knocks WHERE answer IS NULL ORDER BY id").toArray()) {
      const r = await fetch(this.env.SYNAPSE + "/_matrix/client/v3/profile/" + encodeURIComponent(k.user_id),
        { headers: { authorization: "Bearer " + this.env.TOKEN } });
      await r.text();
      this.sql.exec("UPDATE knocks SET answer = ? WHERE id = ?", r.status, k.id);
    }
  }
}
export default {
  async fetch(request, env) {
    const room = env.ROOM.get(env.ROOM.idFromName("room"));
    if (new URL(request.url).pathname === "/knocks") {
      return room.fetch("http://room/knocks");
    }
    if (request.method !== "POST") {
      return new Response('{"status":"running"}', { headers: { "content-type": "application/json" } });
    }
    const body = await request.json();
    const r = await room.fetch("http://room/knock", { method: "POST", body: JSON.stringify({ user_id: body.matrix_id }) });
    return new Response(await r.text(), { status: 202, headers: { "content-type": "application/json" } });
  },
};
"#;
    let toml = format!(
        "[vars]\nSYNAPSE = \"{synapse}\"\nTOKEN = \"{token}\"\n\n[[durable_objects.bindings]]\n\
         name = \"ROOM\"\nclass_name = \"Room\"\n\n[[migrations]]\ntag = \"v1\"\n\
         new_sqlite_classes = [\"Room\"]\n"
    );
    start_js_worker("floor", js, &toml)
}

/// A JavaScript worker (`js`, with `toml` added to its configuration) under `wrangler dev
/// --local`, ready once `GET /` answers 200.
fn start_js_worker(name: &str, js: &str, toml: &str) -> (Guarded, String, PathBuf, u16) {
    let dir = scratch_dir(name);
    fs::write(dir.join("index.js"), js).expect("floor worker");
    let config = dir.join("wrangler.toml");
    fs::write(
        &config,
        format!(
            "name = \"{name}\"\nmain = \"index.js\"\ncompatibility_date = \"2025-09-01\"\n{toml}"
        ),
    )
    .expect("floor wrangler.toml");
    for _ in 0..3 {
        let port = free_port();
        let mut cmd = wrangler_dev(port, &dir.join("state"), &config);
        let process = Guarded::spawn("INT", &mut cmd, &dir.join(format!("wrangler-{port}.log")));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = support::agent().get(&format!("{url}/")).call() {
                if r.status() == 200 {
                    return (process, url, config, port);
                }
            }
            let tail = process.log_tail();
            if tail.contains("Address already in use") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the floor worker did not start:\n{tail}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("the floor worker did not start: ports kept being taken");
}

fn url_port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Counts the room's knocks with this verdict (paging through GET /knocks).
fn count_knocks(agent: &ureq::Agent, url: &str, verdict: &str) -> usize {
    let auth = format!("Bearer {CPU_API_KEY}");
    let mut before: Option<i64> = None;
    let mut total = 0;
    loop {
        let mut u = format!("{url}/knocks?verdict={verdict}&limit=1000");
        if let Some(b) = before {
            u.push_str(&format!("&before={b}"));
        }
        let r = agent
            .get(&u)
            .set("Authorization", &auth)
            .call()
            .unwrap_or_else(|e| panic!("GET /knocks: {e}"));
        let v: Value =
            serde_json::from_str(&r.into_string().unwrap_or_default()).expect("GET /knocks JSON");
        total += v["knocks"].as_array().map_or(0, Vec::len);
        match v["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return total,
        }
    }
}

fn hot_path_cpu(mode: &Mode, s: &Synapse) -> Value {
    let (per_batch, rounds, warmup) = if mode.quick { (40, 3, 8) } else { (200, 5, 24) };
    let room = s.create_knock_room(&s.bot);
    let mut vars = Worker::base_vars(s);
    set_var(&mut vars, "NEW_ROOM_ID", &room);
    set_var(&mut vars, "MAX_REQUESTS_PER_WINDOW", "1");
    set_var(&mut vars, "RATE_LIMIT_WINDOW", "1h");
    set_var(&mut vars, "WAVE_MAX_KNOCKS", "100000");
    set_var(&mut vars, "API_KEY", CPU_API_KEY);
    set_var(&mut vars, "WEBHOOK_SECRET", CPU_WEBHOOK_SECRET);
    set_var(&mut vars, "TALLY_SIGNING_SECRET", CPU_TALLY_SECRET);
    let w = Worker::start(&vars);
    let procs = find_dev_processes(&w.config, url_port(&w.url));
    let (_floor_process, floor_url, floor_config, floor_port) =
        start_floor_worker(&s.url, &s.bot.token);
    let floor = find_dev_processes(&floor_config, floor_port);
    assert!(
        floor.worker != procs.worker,
        "the floor worker and Knock share a workerd"
    );

    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build();
    let knock_url = format!("{}/invite_from_form", w.url);
    let get_url = format!("{}/", w.url);
    let floor_get_url = format!("{floor_url}/");
    let floor_knock_url = format!("{floor_url}/knock");
    let auth = format!("Bearer {CPU_API_KEY}");
    let json_ct = ("Content-Type", "application/json");
    let secret = ("X-Knock-Secret", CPU_WEBHOOK_SECRET);

    // Setup: put the limited address over its limit, and block the glob.
    let limited_body = json!({ "matrix_id": "@cpulimited:localhost" }).to_string();
    let limited_headers = [json_ct, secret, ("CF-Connecting-IP", CPU_LIMITED_ADDRESS)];
    let first = send(
        &agent,
        "POST",
        &knock_url,
        &limited_headers,
        Some(limited_body.as_bytes()),
    );
    assert_eq!(first, 202, "the first knock from {CPU_LIMITED_ADDRESS}");
    let blocked = w.admin(
        CPU_API_KEY,
        "/block_user",
        Some(json!({ "user_id": CPU_BLOCKED_GLOB, "reason": "benchmark" })),
    );
    assert_eq!(blocked.status, 200, "POST /block_user: {}", blocked.body);

    // Every knock but the rejected ones has a Matrix ID and an address of its own.
    let mut seq: u32 = 0;
    let mut next = || {
        seq += 1;
        (
            seq,
            format!(
                "10.{}.{}.{}",
                (seq >> 16) & 255,
                (seq >> 8) & 255,
                seq & 255
            ),
        )
    };
    let mut sent = Map::new();
    let drained = || {
        let r = agent
            .get(&format!("{}/knocks?verdict=queued&limit=1", w.url))
            .set("Authorization", &auth)
            .call()
            .unwrap_or_else(|e| panic!("GET /knocks: {e}"));
        let v: Value =
            serde_json::from_str(&r.into_string().unwrap_or_default()).expect("GET /knocks JSON");
        v["knocks"].as_array().is_some_and(|k| k.is_empty())
    };
    // The floor worker's knocks by the status Synapse answered (`pending`: not yet asked).
    let floor_knocks = || -> Value {
        let r = agent
            .get(&format!("{floor_url}/knocks"))
            .call()
            .unwrap_or_else(|e| panic!("GET /knocks on the floor worker: {e}"));
        serde_json::from_str(&r.into_string().unwrap_or_default()).expect("floor /knocks JSON")
    };
    let floor_drained = || floor_knocks()["pending"].is_null();
    let get_once = |url: &str| {
        let st = send(&agent, "GET", url, &[], None);
        assert_eq!(st, 200, "GET {url}");
    };
    let reject_once = || {
        let st = send(
            &agent,
            "POST",
            &knock_url,
            &limited_headers,
            Some(limited_body.as_bytes()),
        );
        assert_eq!(st, 429, "a knock over the address limit");
    };
    let mut run = |kind: CpuKind, n: usize| -> Batch {
        let p = if matches!(kind, CpuKind::Floor | CpuKind::FloorKnock) {
            &floor
        } else {
            &procs
        };
        let mut batch = || -> usize {
            match kind {
                CpuKind::Get => (0..n).for_each(|_| get_once(&get_url)),
                CpuKind::Floor => (0..n).for_each(|_| get_once(&floor_get_url)),
                CpuKind::FloorKnock => {
                    for _ in 0..n {
                        let (i, _) = next();
                        let body =
                            json!({ "matrix_id": format!("@cpu-floor-{i}:localhost") }).to_string();
                        let st = send(
                            &agent,
                            "POST",
                            &floor_knock_url,
                            &[json_ct],
                            Some(body.as_bytes()),
                        );
                        assert_eq!(st, 202, "floor knock {i}");
                    }
                }
                CpuKind::Rejected => (0..n).for_each(|_| reject_once()),
                CpuKind::GetConcurrent | CpuKind::RejectedConcurrent => {
                    let share = n.div_ceil(CPU_CONCURRENCY);
                    std::thread::scope(|sc| {
                        for _ in 0..CPU_CONCURRENCY {
                            sc.spawn(|| {
                                for _ in 0..share {
                                    if kind == CpuKind::GetConcurrent {
                                        get_once(&get_url)
                                    } else {
                                        reject_once()
                                    }
                                }
                            });
                        }
                    });
                    return share * CPU_CONCURRENCY;
                }
                CpuKind::AcceptedSigned => {
                    for _ in 0..n {
                        let (i, _) = next();
                        let body =
                            json!({ "matrix_id": format!("@cpu-ok-{i}:localhost") }).to_string();
                        let sig = knock::domain::signature::sign_base64(
                            CPU_TALLY_SECRET,
                            body.as_bytes(),
                        );
                        let headers = [json_ct, ("Tally-Signature", sig.as_str())];
                        let st = send(&agent, "POST", &knock_url, &headers, Some(body.as_bytes()));
                        assert_eq!(st, 202, "{kind:?} knock {i}");
                    }
                }
                CpuKind::Accepted | CpuKind::Blocked => {
                    for _ in 0..n {
                        let (i, address) = next();
                        let body = if kind == CpuKind::Accepted {
                            json!({ "matrix_id": format!("@cpu-ok-{i}:localhost") })
                        } else {
                            json!({ "matrix_id": format!("@cpublocked-{i}:localhost"), "delivery": i })
                        }
                        .to_string();
                        let headers = [json_ct, secret, ("CF-Connecting-IP", address.as_str())];
                        let st = send(&agent, "POST", &knock_url, &headers, Some(body.as_bytes()));
                        assert_eq!(st, 202, "{kind:?} knock from {address}");
                    }
                }
            }
            n
        };
        let check: Option<&dyn Fn() -> bool> = match kind {
            CpuKind::Accepted | CpuKind::AcceptedSigned => Some(&drained),
            CpuKind::FloorKnock => Some(&floor_drained),
            _ => None,
        };
        let b = cpu_batch(p, &mut batch, check);
        let e = sent.entry(kind.key()).or_insert(json!(0));
        *e = json!(e.as_u64().unwrap_or(0) + b.requests as u64);
        b
    };

    // An unmeasured warm-up batch of each kind, then the rounds, each kind once per round in
    // an order that rotates from round to round.
    for kind in CpuKind::ALL {
        run(kind, warmup);
    }
    let mut batches: Vec<(CpuKind, Batch)> = Vec::new();
    for r in 0..rounds {
        for i in 0..CpuKind::ALL.len() {
            let kind = CpuKind::ALL[(i + r) % CpuKind::ALL.len()];
            let b = run(kind, per_batch);
            eprintln!(
                "e2e_report: hot_path_cpu: round {r} {:>19}: {:>9.0} ns/request in the worker's workerd",
                kind.key(),
                b.worker_ns
            );
            batches.push((kind, b));
        }
    }

    // Every knock took the path it was meant to: all accepted ones were worked off by the queue
    // (no such user on the homeserver), all blocked ones were recorded as blocked.
    let accepted_sent = ["accepted", "accepted_signed"]
        .iter()
        .map(|k| sent.get(*k).and_then(Value::as_u64).unwrap_or(0) as usize)
        .sum::<usize>();
    let blocked_sent = sent.get("blocked").and_then(Value::as_u64).unwrap_or(0) as usize;
    let verdicts = json!({
        "no_such_user": count_knocks(&agent, &w.url, "no_such_user"),
        "blocked": count_knocks(&agent, &w.url, "blocked"),
        "queued": count_knocks(&agent, &w.url, "queued"),
        "failed": count_knocks(&agent, &w.url, "failed"),
    });
    // The setup's first knock from the limited address was accepted too.
    assert_eq!(
        verdicts["no_such_user"].as_u64(),
        Some(accepted_sent as u64 + 1),
        "every accepted knock should end as no_such_user: {verdicts}"
    );
    assert_eq!(
        verdicts["blocked"].as_u64(),
        Some(blocked_sent as u64),
        "every blocked knock should be recorded as blocked: {verdicts}"
    );

    // And every floor knock was asked of Synapse, which has no such user either.
    let floor_sent = sent.get("floor_knock").and_then(Value::as_u64).unwrap_or(0);
    let floor_verdicts = floor_knocks();
    assert_eq!(
        floor_verdicts,
        json!({ "404": floor_sent }),
        "every floor knock should be answered 404 by Synapse"
    );

    let of = |kind: CpuKind| -> Vec<&Batch> {
        batches
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, b)| b)
            .collect()
    };
    let rounds_of = |kind: CpuKind| -> Vec<f64> { of(kind).iter().map(|b| b.worker_ns).collect() };
    let floor_median = median(
        &of(CpuKind::Floor)
            .iter()
            .map(|b| b.worker_ns)
            .collect::<Vec<_>>(),
    );
    let floor_knock_median = median(&rounds_of(CpuKind::FloorKnock));
    let mut kinds = Map::new();
    for kind in CpuKind::ALL {
        let bs = of(kind);
        let user_ticks: u64 = bs.iter().map(|b| b.worker_ticks.0).sum();
        let sys_ticks: u64 = bs.iter().map(|b| b.worker_ticks.1).sum();
        let worker: Vec<f64> = bs.iter().map(|b| b.worker_ns).collect();
        let med = median(&worker);
        // Against GET / at the same concurrency; per round, against that round's GET / (rounds
        // pair up in order).
        let base = rounds_of(kind.baseline());
        let paired: Vec<f64> = worker.iter().zip(&base).map(|(k, g)| k / g).collect();
        kinds.insert(
            kind.key().into(),
            json!({
                "ns_per_request": med.round(),
                "baseline": kind.baseline().key(),
                "ratio_to_get": round(med / median(&base), 3),
                "paired_ratio_median": round(median(&paired), 3),
                // The floor is sequential: only sequential kinds compare with it.
                "above_floor_ns": (kind.baseline() == CpuKind::Get).then(|| (med - floor_median).round()),
                // An accepted knock against the bare hops it needs (floor_knock).
                "ratio_to_floor_knock": matches!(kind, CpuKind::Accepted | CpuKind::AcceptedSigned | CpuKind::Blocked)
                    .then(|| round(med / floor_knock_median, 3)),
                "rounds_ns": worker.iter().map(|x| x.round()).collect::<Vec<_>>(),
                "min_ns": sorted(&worker)[0].round(),
                "max_ns": sorted(&worker)[worker.len() - 1].round(),
                "proxy_workerd_ns_per_request": median(&bs.iter().map(|b| b.proxy_ns).collect::<Vec<_>>()).round(),
                "node_ns_per_request": median(&bs.iter().map(|b| b.node_ns).collect::<Vec<_>>()).round(),
                "wall_us_per_request": round(median(&bs.iter().map(|b| b.wall_us).collect::<Vec<_>>()), 1),
                "drain_checks": bs.iter().map(|b| b.drain_checks).sum::<u32>(),
                "drain_checks_excluded_ns": bs.iter().map(|b| b.excluded_ns).sum::<u64>(),
                "threads_changed": bs.iter().any(|b| b.threads_changed),
                "system_share": round(sys_ticks as f64 / (user_ticks + sys_ticks).max(1) as f64, 3),
            }),
        );
    }
    // Cross-check of the two counters over every measured batch.
    let clk_tck: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100);
    let schedstat_total: u64 = batches.iter().map(|(_, b)| b.worker_total_ns).sum();
    let ticks_total: u64 = batches
        .iter()
        .map(|(_, b)| b.worker_ticks.0 + b.worker_ticks.1)
        .sum();
    json!({
        "kinds": kinds,
        "cross_check": {
            "schedstat_ms": round(schedstat_total as f64 / 1e6, 1),
            "stat_ticks_ms": round(ticks_total as f64 * 1e3 / clk_tck as f64, 1),
            "clk_tck": clk_tck,
            "note": "The worker's workerd over all measured batches: the sum of its threads' schedstat against utime + stime of /proc/<pid>/stat (whole process, 1/CLK_TCK ticks). They should agree within a few percent; system_share is stime / (utime + stime) per kind.",
        },
        "requests_per_batch": per_batch,
        "concurrency_of_concurrent_kinds": CPU_CONCURRENCY,
        "rounds": rounds,
        "warmup_per_kind": warmup,
        "requests_sent": sent,
        "verdicts": verdicts,
        "floor_knock_answers": floor_verdicts,
        "processes": { "knock": procs.cmdlines, "floor": floor.cmdlines },
        "method": format!(
            "CPU = the first field of /proc/<pid>/task/*/schedstat (ns on CPU), summed over every \
             thread of the workerd process that runs the worker, read before and after each batch \
             of {per_batch} requests of one kind, sent one after another on a kept-alive \
             connection from the bench (the concurrent kinds: over {CPU_CONCURRENCY} such \
             connections at once); divided by the number of requests. A batch ends when that workerd \
             has used under {} µs in each of {QUIET_WINDOWS} consecutive {} ms windows (deferred \
             work, alarms and garbage collection included), and, for accepted knocks, when GET \
             /knocks?verdict=queued is empty (the CPU of that check is measured and taken out). \
             {rounds} rounds after one unmeasured warm-up batch of {warmup} per kind, the order of \
             the kinds rotating each round; the figures are medians across rounds.",
            QUIET_NS / 1000,
            QUIET_WINDOW.as_millis()
        ),
        "note": "Kinds: `get` GET / on Knock (the baseline; its session status is cached for 5 s, so most probes make no Durable Object call); `rejected` a signed knock from one address already over MAX_REQUESTS_PER_WINDOW=1 (RATE_LIMIT_WINDOW=1h), answered 429; `accepted` a signed knock (X-Knock-Secret) from a new Matrix ID and a new CF-Connecting-IP each, answered 202, including the room Durable Object's store and its queue's alarm, whose profile check on Synapse finds no such user (the users do not exist, so no invite is sent), and a new limiter Durable Object per address; `blocked` a signed knock from a new Matrix ID under the blocked glob @cpublocked-*:localhost (a glob, because one Matrix ID may knock only 5 times in 10 minutes, after which its knocks are 429 from the room's per-ID limiter rather than blocked), new address and body each, answered 202 and recorded as blocked; `accepted_signed` the same as `accepted` but signed as a Tally delivery (Tally-Signature, no X-Knock-Secret), which skips the address limit, so it is `accepted` without the limiter Durable Object; `floor` GET / on a trivial JavaScript worker under the same wrangler dev, in its own workerd; `floor_knock` the bare hops of an accepted knock on that JavaScript worker: a JSON POST forwarded to a SQLite-backed Durable Object that inserts a row and sets an alarm, whose alarm GETs the profile from Synapse and stores the answer's status on the row (no signature, parsing, block-list, limits, lifecycle or logs), so ratio_to_floor_knock is what Knock's own work adds to what the architecture costs in this stack; `get_concurrent` and `rejected_concurrent` the same as `get` and `rejected` over 8 connections at once (each sending its share one at a time), where ratio_to_get is against `get_concurrent`: isolates coalesce a refused address's background limiter report (one in flight per key), so a 429 sent one at a time pays a limiter Durable Object round trip that concurrent ones mostly share. wrangler 4 runs its local proxy in a second workerd process that binds the dev port, and the per-request log line in node: neither is counted in ns_per_request (they are reported apart, as proxy_workerd_ns_per_request and node_ns_per_request). The worker's workerd also runs miniflare's entry worker in front of the worker, so its figures include that per-request overhead; the floor shows how much of GET / it is.",
    })
}

// ---------------------------------------------------------------------------------------------

/// Rooms of the `cron_rooms` deployment.
const CRON_ROOMS: usize = 20;
const CRON_API_KEY: &str = "bench-cron-admin-key";

fn cron_rooms(mode: &Mode, s: &Synapse) -> Value {
    let runs = if mode.quick { 3 } else { 10 };
    let mut table = Map::new();
    for i in 0..CRON_ROOMS {
        let room = s.create_knock_room(&s.bot);
        // One member besides the bot, so each room's block-list scan has someone to look at.
        let member = s.new_user(&format!("cronmember{i}-"));
        let r = s.client(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            &s.bot.token,
            Some(json!({ "user_id": member.user_id })),
        );
        assert_eq!(r.status, 200, "invite: {}", r.body);
        s.join(&member, &room);
        table.insert(format!("r{:02}", i + 1), json!({ "room_id": room }));
    }
    let mut vars = Worker::base_vars(s);
    vars.retain(|(k, _)| k != "NEW_ROOM_ID");
    set_var(&mut vars, "KNOCK_ROOMS", &Value::Object(table).to_string());
    set_var(&mut vars, "API_KEY", CRON_API_KEY);
    // Every task is due on every run: the invite check and the full member scan.
    set_var(&mut vars, "INVITE_CHECK_INTERVAL", "1ms");
    set_var(&mut vars, "BLOCKLIST_SCAN_INTERVAL", "1ms");
    let w = Worker::start(&vars);
    let procs = find_dev_processes(&w.config, url_port(&w.url));
    let cron_url = format!("{}/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", w.url);
    let get_url = format!("{}/", w.url);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let cron = || {
        let status = send(&agent, "GET", &cron_url, &[], None);
        assert_eq!(status, 200, "the cron trigger");
    };
    // The first run lists every room's members and stores a sync token; later runs are
    // incremental, as in production.
    cron();
    let mut per_run = Vec::new();
    let mut get_ns = Vec::new();
    for _ in 0..runs {
        let b = cpu_batch(
            &procs,
            &mut || {
                cron();
                1
            },
            None,
        );
        per_run.push(b.worker_ns);
        let g = cpu_batch(
            &procs,
            &mut || {
                for _ in 0..20 {
                    send(&agent, "GET", &get_url, &[], None);
                }
                20
            },
            None,
        );
        get_ns.push(g.worker_ns);
    }
    let rooms = w.admin(CRON_API_KEY, "/rooms", None);
    assert_eq!(rooms.status, 200, "GET /rooms: {}", rooms.body);
    let listed = rooms.json()["rooms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let calls: Vec<f64> = listed
        .iter()
        .filter_map(|r| r["status"]["last_run"]["calls"].as_f64())
        .collect();
    let ran = listed
        .iter()
        .filter(|r| r["status"]["last_run"]["ran"] == true)
        .count();
    assert_eq!(
        calls.len(),
        CRON_ROOMS,
        "every room reports its last run: {}",
        rooms.body
    );
    let run_ns = median(&per_run);
    let base_ns = median(&get_ns);
    json!({
        "ok": true,
        "rooms": CRON_ROOMS,
        "runs": runs,
        "rooms_that_ran": ran,
        "cron_invocation_subrequests": CRON_ROOMS,
        "room_invocation_calls_max": calls.iter().cloned().fold(0.0, f64::max),
        "room_invocation_calls_median": median(&calls),
        "cpu_ns_per_run": round(run_ns, 0),
        "cpu_ns_per_room": round(run_ns / CRON_ROOMS as f64, 0),
        "get_ns_per_request": round(base_ns, 0),
        "run_to_get_ratio": round(run_ns / base_ns.max(1.0), 2),
        "runs_ns": per_run.iter().map(|x| round(*x, 0)).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------------------------
// 7. A moderator's ✅ in the management room → invite, with the one-minute cron on its schedule

const REACTION_API_KEY: &str = "bench-reaction-key";
/// The cron's period (`* * * * *`): `wrangler dev` never fires crons itself, so the stage does,
/// on this schedule, as Cloudflare would.
const CRON_PERIOD: Duration = Duration::from_secs(60);

fn reaction_latency(mode: &Mode, s: &Synapse) -> Value {
    let n = if mode.quick { 4 } else { 20 };
    // Reactions come at random instants over this long, so they land anywhere in the cron's
    // period, as a moderator's do.
    let window = if mode.quick {
        CRON_PERIOD
    } else {
        2 * CRON_PERIOD
    };
    let room = s.create_knock_room(&s.bot);
    let baseline_room = s.create_knock_room(&s.bot);
    let r = s.client(
        "POST",
        "/_matrix/client/v3/createRoom",
        &s.bot.token,
        Some(json!({"preset": "private_chat", "name": "Knock moderators (bench)"})),
    );
    assert_eq!(r.status, 200, "createRoom: {}", r.body);
    let management = r.json()["room_id"].as_str().expect("room id").to_owned();
    let moderator = s.new_user("benchmod");
    let r = s.client(
        "POST",
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&management)),
        &s.bot.token,
        Some(json!({"user_id": moderator.user_id})),
    );
    assert_eq!(r.status, 200, "invite: {}", r.body);
    s.join(&moderator, &management);
    let levels_path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
        enc(&management)
    );
    let mut levels = s.client("GET", &levels_path, &s.bot.token, None).json();
    levels["users"][moderator.user_id.as_str()] = json!(50);
    let r = s.client("PUT", &levels_path, &s.bot.token, Some(levels));
    assert_eq!(r.status, 200, "power levels: {}", r.body);

    let mut vars = Worker::base_vars(s);
    set_var(&mut vars, "NEW_ROOM_ID", &room);
    set_var(&mut vars, "MANAGEMENT_ROOM_ID", &management);
    set_var(&mut vars, "API_KEY", REACTION_API_KEY);
    let w = Worker::start(&vars);
    // Namesakes of a blocked common name are held for a moderator, one notice each.
    let r = w.admin(
        REACTION_API_KEY,
        "/block_user",
        Some(json!({"user_id": "@matthew41:localhost"})),
    );
    assert_eq!(r.status, 200, "block: {}", r.body);
    let users: Vec<support::User> = (0..n)
        .map(|i| s.register(&format!("matthew{}", 50 + i), false))
        .collect();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let cron_url = format!("{}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*", w.url);
    let cron = || {
        let status = send(&agent, "GET", &cron_url, &[], None);
        assert_eq!(status, 200, "the cron trigger");
    };
    for u in &users {
        let r = w.post(
            "/invite_from_form",
            &[("Content-Type", "application/json")],
            json!({ "matrix_id": u.user_id }).to_string().as_bytes(),
        );
        assert_eq!(r.status, 202, "knock: {}", r.body);
    }
    // Each knock's notice, by the user it is about.
    let filter = enc(r#"{"types":["m.room.message"]}"#);
    let messages = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200&filter={filter}",
        enc(&management)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let notices: Vec<String> = loop {
        let chunk = s.client("GET", &messages, &s.bot.token, None).json();
        let events = chunk["chunk"].as_array().cloned().unwrap_or_default();
        let found: Vec<Option<String>> = users
            .iter()
            .map(|u| {
                events
                    .iter()
                    .find(|e| e["content"]["org.knock.notice"]["user_id"] == u.user_id.as_str())
                    .and_then(|e| e["event_id"].as_str().map(str::to_owned))
            })
            .collect();
        if found.iter().all(Option::is_some) {
            break found.into_iter().flatten().collect();
        }
        assert!(Instant::now() < deadline, "the held knocks' notices");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The management room's first read (it starts listening), as a deployment's first run does.
    cron();

    // The direct invite, in the same run: the bot's invite straight to Synapse.
    let direct_users: Vec<_> = (0..n).map(|_| s.new_user("benchdirect")).collect();
    let direct: Vec<f64> = direct_users
        .iter()
        .map(|u| baseline_sample(s, &baseline_room, &u.user_id))
        .collect();

    // Reaction instants, spread over the window by a fixed seed.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut offsets: Vec<Duration> = (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            Duration::from_millis(seed % window.as_millis() as u64)
        })
        .collect();
    offsets.sort();
    let t0 = Instant::now();
    let mut next_cron = t0 + CRON_PERIOD;
    let mut reacted: Vec<Option<Instant>> = vec![None; n];
    let mut invited: Vec<Option<Instant>> = vec![None; n];
    let mut crons = 0u32;
    let give_up = t0 + window + 3 * CRON_PERIOD;
    while invited.iter().any(Option::is_none) {
        let now = Instant::now();
        assert!(
            now < give_up,
            "every approval lands within three cron periods"
        );
        for i in 0..n {
            if reacted[i].is_none() && now >= t0 + offsets[i] {
                let txn = format!("bench-react-{i}-{}", support::now_ms());
                let r = s.client(
                    "PUT",
                    &format!(
                        "/_matrix/client/v3/rooms/{}/send/m.reaction/{txn}",
                        enc(&management)
                    ),
                    &moderator.token,
                    Some(json!({"m.relates_to": {"rel_type": "m.annotation",
                                                  "event_id": notices[i], "key": "✅"}})),
                );
                assert_eq!(r.status, 200, "reaction: {}", r.body);
                reacted[i] = Some(Instant::now());
            }
        }
        if now >= next_cron {
            // On its schedule; the trigger returns once the run is done, so a slow run delays
            // the next tick as Cloudflare's one-at-a-time scheduled events would.
            cron();
            crons += 1;
            next_cron += CRON_PERIOD;
        }
        for i in 0..n {
            if reacted[i].is_some()
                && invited[i].is_none()
                && s.membership(&room, &users[i].user_id).as_deref() == Some("invite")
            {
                invited[i] = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let latency: Vec<f64> = (0..n)
        .map(|i| ms(invited[i].expect("invited") - reacted[i].expect("reacted")))
        .collect();
    let k = summary(&latency);
    json!({
        "ok": true,
        "samples": n,
        "window_s": window.as_secs(),
        "cron_period_s": CRON_PERIOD.as_secs(),
        "cron_runs": crons,
        "reaction_to_invite": k,
        "direct_invite": summary(&direct),
        "within_60s": latency.iter().filter(|l| **l <= 60_000.0).count(),
        "note": "A moderator's ✅ on each held knock's notice, at seeded random instants over the window; the one-minute cron triggered on its schedule (wrangler dev never fires it); timed from the reaction's PUT returning until Synapse reports the invite (polled every 100 ms). The direct invite is the bot's own invite straight to Synapse, in the same run.",
    })
}

/// Whether `KNOCK_BENCH_STAGES` (a comma-separated list; unset or empty: every stage) names
/// the stage.
fn wanted(name: &str) -> bool {
    match std::env::var("KNOCK_BENCH_STAGES") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|s| s.trim() == name),
        _ => true,
    }
}

fn main() {
    let mode = Mode::from_env();
    let dir = out_dir();
    let started = Instant::now();
    let mut stages = Map::new();
    let mut run = |name: &str, f: &dyn Fn() -> Value| {
        if wanted(name) {
            stages.insert(name.into(), stage(name, f));
        }
    };

    run("bundle", &bundle);

    let synapse: Result<&'static Synapse, String> =
        catch_unwind(support::synapse).map_err(|e| panic_text(&*e));
    let needs_synapse = |f: &dyn Fn(&'static Synapse) -> Value| match &synapse {
        Ok(s) => f(s),
        Err(e) => json!({ "ok": false, "error": format!("Synapse did not start: {e}") }),
    };
    run("rejected_knock", &|| {
        needs_synapse(&|s| rejected_knock(&mode, s, &dir))
    });
    run("accepted_latency", &|| {
        needs_synapse(&|s| accepted_latency(&mode, s))
    });
    run("hot_path_cpu", &|| {
        needs_synapse(&|s| hot_path_cpu(&mode, s))
    });
    run("cron_rooms", &|| needs_synapse(&|s| cron_rooms(&mode, s)));
    run("reaction_latency", &|| {
        needs_synapse(&|s| reaction_latency(&mode, s))
    });
    run("list_scale", &|| {
        needs_synapse(&|s| list_scale::list_scale(&mode, s))
    });
    run("cold_start", &|| {
        cold_start(&mode, synapse.as_ref().ok().copied())
    });

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

//! Stage `list_scale`: Knock's block-list at 1k, 10k and 100k entries (loaded by import), in
//! workerd: the CPU of the first knock after a change of the list (the isolate takes up what the
//! change published to KV: a layer of the entries it added, over the index it holds), of a warm
//! knock, and of a knock with an empty list, beside `GET /` in the same run; the compiled index's
//! size as the import published it whole, and the size a change publishes; and the CPU the list
//! object spends where the list is written (compiling and publishing one change).
//!
//! A "change" is an import of one more line (`POST /blocklist`): unlike `block_user`, an import
//! does not make the admin request's isolate take up the new index at once, so the next knock
//! after the hot path's version check (at most every 5 s) is the one that reads and opens it.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::support::{Synapse, Worker};
use super::{
    cpu_batch, find_dev_processes, median, round, send, set_var, start_js_worker, url_port, Mode,
};

/// A JavaScript worker that stores a value of `n` bytes in its KV namespace (`/put?n=`) and
/// reads it back whole (`/read`): what one KV read of that size costs in this local stack.
const KV_FLOOR_JS: &str = "export default {\n  async fetch(req, env) {\n    const u = new URL(req.url);\n    if (u.pathname === '/put') {\n      const b = new Uint8Array(Number(u.searchParams.get('n')));\n      for (let i = 0; i < b.length; i += 4096) b[i] = i & 255;\n      await env.KV.put('blob', b);\n      return new Response('stored');\n    }\n    if (u.pathname === '/read') {\n      const b = await env.KV.get('blob', 'arrayBuffer');\n      return new Response(String(b ? b.byteLength : -1));\n    }\n    return new Response('running');\n  },\n};\n";

/// The workerd CPU of one KV read of `bytes` bytes by a JavaScript worker, above its `GET /`.
fn kv_read_floor(bytes: u64, samples: usize) -> (f64, f64) {
    let (_process, url, config, port) = start_js_worker(
        "kvfloor",
        KV_FLOOR_JS,
        "kv_namespaces = [{ binding = \"KV\", id = \"kvfloor\" }]\n",
    );
    let procs = find_dev_processes(&config, port);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let put = agent
        .get(&format!("{url}/put?n={bytes}"))
        .call()
        .map(|r| r.into_string().unwrap_or_default())
        .unwrap_or_else(|e| panic!("kv floor /put: {e}"));
    assert_eq!(put, "stored");
    let (mut reads, mut gets) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        reads.push(
            cpu_batch(
                &procs,
                &mut || {
                    let got = agent
                        .get(&format!("{url}/read"))
                        .call()
                        .map(|r| r.into_string().unwrap_or_default())
                        .unwrap_or_default();
                    assert_eq!(got, bytes.to_string(), "the floor read its value whole");
                    1
                },
                None,
            )
            .worker_ns,
        );
        gets.push(
            cpu_batch(
                &procs,
                &mut || {
                    assert_eq!(send(&agent, "GET", &format!("{url}/"), &[], None), 200);
                    1
                },
                None,
            )
            .worker_ns,
        );
    }
    (median(&reads), median(&gets))
}

const API_KEY: &str = "bench-scale-admin-key";
const SECRET: &str = "bench-scale-webhook-secret";
/// The hot path trusts the list version it read from KV this long (`VERSION_TTL_MS`).
const VERSION_TTL: Duration = Duration::from_millis(5_500);

/// A deterministic list of `n` lines shaped like a shared ban list: generated localparts of
/// spam and bot accounts, a few glob waves and server bans.
fn list_text(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const SYLLABLES: [&str; 16] = [
        "ka", "zu", "mi", "ro", "te", "vex", "qua", "lo", "nyx", "pra", "dor", "fi", "gru", "sha",
        "wex", "bo",
    ];
    let mut out = String::with_capacity(n * 40);
    for i in 0..n {
        let r = next();
        let line = match r % 40 {
            0 => format!("@wave{i}x*:*  # spam wave\n"),
            1 => format!("*:spam{i}.example  # spam server\n"),
            _ => {
                let mut local = String::new();
                for k in 0..(2 + (r >> 8) % 3) {
                    local.push_str(SYLLABLES[((r >> (12 + 4 * k)) % 16) as usize]);
                }
                format!("@{local}{}:spam{}.example  # spam\n", i, (r >> 40) % 50)
            }
        };
        out.push_str(&line);
    }
    out
}

/// The last `blocklist_published` line's version and blob size, if any.
fn published(log: &str) -> Option<(u64, u64)> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("blocklist_published"))?;
    let field = |name: &str| -> Option<u64> {
        let at = line.find(&format!("\"{name}\":"))? + name.len() + 3;
        line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    Some((field("version")?, field("bytes").unwrap_or(0)))
}

fn wait_published(w: &Worker, version: u64) -> u64 {
    let started = Instant::now();
    loop {
        if let Some((v, bytes)) = published(&w.log()) {
            if v >= version {
                return bytes;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "version {version} was not published"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(super) fn list_scale(mode: &Mode, s: &Synapse) -> Value {
    let sizes: &[usize] = &[0, 1_000, 10_000, 100_000];
    let (warm_rounds, warm_knocks, firsts) = if mode.quick { (2, 10, 3) } else { (4, 20, 7) };
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .redirects(0)
        .build();
    let mut results = Map::new();
    let mut seq = 0u32;
    for &n in sizes {
        let room = s.create_knock_room(&s.bot);
        let mut vars = Worker::base_vars(s);
        set_var(&mut vars, "NEW_ROOM_ID", &room);
        set_var(&mut vars, "API_KEY", API_KEY);
        set_var(&mut vars, "WEBHOOK_SECRET", SECRET);
        set_var(&mut vars, "WAVE_MAX_KNOCKS", "100000");
        let w = Worker::start(&vars);
        let procs = find_dev_processes(&w.config, url_port(&w.url));
        let auth = format!("Bearer {API_KEY}");
        let import = |text: &str| -> u64 {
            let r = agent
                .post(&format!("{}/blocklist", w.url))
                .set("Authorization", &auth)
                .set("Content-Type", "text/plain")
                .send_string(text)
                .unwrap_or_else(|e| panic!("POST /blocklist: {e}"));
            let v: Value =
                serde_json::from_str(&r.into_string().unwrap_or_default()).expect("import JSON");
            v["version"].as_u64().expect("import version")
        };
        let mut bytes = 0;
        let mut import_ns = None;
        let mut current = 0;
        if n > 0 {
            let before = procs.read();
            // Room for the changes below: a list holds at most 100,000 entries.
            let version = import(&list_text(n - firsts, 0x9e37_79b9 + n as u64));
            bytes = wait_published(&w, version);
            import_ns = Some(procs.read().worker - before.worker);
            current = version;
        }
        let mut knock = |count: usize| -> usize {
            for _ in 0..count {
                seq += 1;
                let address = format!("10.77.{}.{}", (seq >> 8) & 255, seq & 255);
                let body =
                    json!({ "matrix_id": format!("@scalehonest{seq}:localhost") }).to_string();
                let st = send(
                    &agent,
                    "POST",
                    &format!("{}/invite_from_form", w.url),
                    &[
                        ("Content-Type", "application/json"),
                        ("X-Knock-Secret", SECRET),
                        ("CF-Connecting-IP", address.as_str()),
                    ],
                    Some(body.as_bytes()),
                );
                assert_eq!(st, 202, "a knock with {n} entries");
            }
            count
        };
        let drained = || {
            let r = agent
                .get(&format!("{}/knocks?verdict=queued&limit=1", w.url))
                .set("Authorization", &auth)
                .call()
                .map(|r| r.into_string().unwrap_or_default())
                .unwrap_or_default();
            serde_json::from_str::<Value>(&r)
                .ok()
                .and_then(|v| v["knocks"].as_array().map(Vec::is_empty))
                .unwrap_or(false)
        };
        let mut get = || {
            for _ in 0..warm_knocks {
                assert_eq!(send(&agent, "GET", &format!("{}/", w.url), &[], None), 200);
            }
            warm_knocks
        };
        // Warm-up: the isolate takes up the list.
        cpu_batch(&procs, &mut || knock(5), Some(&drained));
        let mut warm = Vec::new();
        let mut gets = Vec::new();
        for _ in 0..warm_rounds {
            warm.push(cpu_batch(&procs, &mut || knock(warm_knocks), Some(&drained)).worker_ns);
            gets.push(cpu_batch(&procs, &mut get, None).worker_ns);
        }
        // First knocks after a change: one more line imported, published, the hot path's
        // version check due; then one knock.
        let mut first = Vec::new();
        let mut paired = Vec::new();
        let mut write = Vec::new();
        let mut layer_bytes = Vec::new();
        if n > 0 {
            for j in 0..firsts {
                let (before, _) = procs.settle();
                let changed_at = Instant::now();
                let version = import(&format!("@scalechange{j}:spam.example\n"));
                assert!(version > current, "change {j} was not stored");
                current = version;
                // What the change published: the entries it added, as a layer over the index
                // the import published whole.
                layer_bytes.push(wait_published(&w, version));
                let (after, _) = procs.settle();
                write.push((after.worker - before.worker) as f64);
                std::thread::sleep(VERSION_TTL.saturating_sub(changed_at.elapsed()));
                let opened = w.log().matches("blocklist_index_opened").count();
                let taken_up = cpu_batch(&procs, &mut || knock(1), Some(&drained)).worker_ns;
                assert!(
                    w.log().matches("blocklist_index_opened").count() > opened,
                    "the first knock after change {j} did not open the new index"
                );
                // The same single knock again, warm: the pair's difference is the take-up.
                let again = cpu_batch(&procs, &mut || knock(1), Some(&drained)).worker_ns;
                first.push(taken_up);
                paired.push(taken_up - again);
            }
        }
        let warm_ns = median(&warm);
        let mut row = json!({
            "entries": n,
            "warm_knock_ns": warm_ns.round(),
            "warm_rounds_ns": warm.iter().map(|x| x.round()).collect::<Vec<_>>(),
            "get_ns": median(&gets).round(),
            "index_bytes": bytes,
        });
        if !first.is_empty() {
            let first_ns = median(&first);
            row["first_knock_after_change_ns"] = json!(first_ns.round());
            row["first_samples_ns"] = json!(first.iter().map(|x| x.round()).collect::<Vec<_>>());
            row["take_up_ns"] = json!(median(&paired).round());
            row["take_up_samples_ns"] = json!(paired.iter().map(|x| x.round()).collect::<Vec<_>>());
            row["write_ns"] = json!(median(&write).round());
            row["change_published_bytes"] = json!(layer_bytes.iter().max());
        }
        if let Some(ns) = import_ns {
            row["import_and_publish_ns"] = json!(ns);
        }
        eprintln!("e2e_report: list_scale: {row}");
        results.insert(n.to_string(), row);
        drop(w);
    }
    // The local stack's own cost of reading from KV what the first knock after a change reads:
    // the change as published (a layer over the index the isolate holds, or the whole index).
    let big_bytes = results["100000"]["change_published_bytes"]
        .as_u64()
        .unwrap_or(0);
    let (read_ns, get_ns) = kv_read_floor(big_bytes, if mode.quick { 3 } else { 7 });
    let kv_read_ns = read_ns - get_ns;
    let empty = results["0"]["warm_knock_ns"].as_f64().unwrap_or(0.0);
    let big = &results["100000"];
    let warm_ratio = big["warm_knock_ns"].as_f64().unwrap_or(0.0) / empty.max(1.0);
    let take_up_ms = big["take_up_ns"].as_f64().unwrap_or(f64::MAX) / 1e6;
    let own_take_up_ms = take_up_ms - kv_read_ns / 1e6;
    json!({
        "sizes": results,
        "kv_read_floor": {
            "bytes": big_bytes,
            "read_ns": read_ns.round(),
            "get_ns": get_ns.round(),
            "above_get_ns": kv_read_ns.round(),
            "note": "a JavaScript worker reading one KV value of the size a change of the 100k \
                     list publishes, in its own wrangler dev: the local KV's cost of handing that \
                     many bytes to a worker",
        },
        "take_up_100k_above_kv_read_ms": round(own_take_up_ms, 2),
        "warm_ratio_100k_to_empty": round(warm_ratio, 3),
        "take_up_100k_ms": round(take_up_ms, 2),
        "goals": {
            "warm_knock_within_1_5x_of_empty": warm_ratio <= 1.5,
            "first_knock_after_a_100k_change_takes_up_the_list_in_under_10_ms": take_up_ms < 10.0,
        },
        "method": "CPU of the workerd process that runs the worker and its objects (schedstat), per \
                   knock including its queue work. take_up = the first knock after a change minus the \
                   same single knock sent right after it (median of the pairs): the CPU of reading and opening what the \
                   change published (a layer of the entries it added, laid over the index the isolate holds) (in this local stack every request also pays workerd's own cost, several \
                   ms, which Cloudflare does not bill as the worker's CPU). write = the list \
                   object's CPU for one change: storing it, compiling the index, publishing it.",
    })
}

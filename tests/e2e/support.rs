//! The end-to-end harness: a real Synapse (from PyPI, in target/synapse-venv) and the real
//! worker in `wrangler dev --local`, both on 127.0.0.1, both started by the tests.
//!
//! Every child process runs under `tests/support/guard.sh`, which stops its whole process group
//! when the test binary exits, so nothing is left behind even when a test panics.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};

pub const SHARED_SECRET: &str = "knock-e2e-registration";
pub const JWT_SECRET: &str = "knock-e2e-jwt";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = repo_root().join("target/e2e").join(format!(
        "{}-{}-{}",
        name,
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process under the guard. Dropping it (or the test binary ending) stops it.
pub struct Guarded {
    child: Child,
    stdin: Option<ChildStdin>,
    pub log: PathBuf,
}

impl Guarded {
    pub fn spawn(signal: &str, cmd: &mut Command, log: &Path) -> Guarded {
        let guard = repo_root().join("tests/support/guard.sh");
        let out = fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut full = Command::new("bash");
        full.arg(guard)
            .arg(signal)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => full.env(k, v),
                None => full.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            full.current_dir(dir);
        }
        let mut child = full
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn guarded process");
        let stdin = child.stdin.take();
        Guarded {
            child,
            stdin,
            log: log.to_owned(),
        }
    }

    /// Stops the process group and waits for the guard to finish.
    pub fn stop(&mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build()
}

fn to_reply(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| {
            resp.header(&n)
                .map(|v| (n.to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    let body = resp.into_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    to_reply(match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    })
}

pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Synapse

pub struct Synapse {
    pub url: String,
    pub bot: User,
    pub room_id: String,
    pub dir: PathBuf,
    process: Mutex<Guarded>,
}

#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub token: String,
    pub password: String,
}

static USER_SEQ: AtomicU32 = AtomicU32::new(0);

fn venv_python() -> PathBuf {
    repo_root().join("target/synapse-venv/bin/python")
}

/// The one Synapse shared by the whole test binary, with a bot and a knock-enabled room.
pub fn synapse() -> &'static Synapse {
    static S: OnceLock<Synapse> = OnceLock::new();
    S.get_or_init(|| Synapse::start(&[]))
}

impl Synapse {
    /// Starts a fresh homeserver. `extra_yaml` lines are appended to the config.
    pub fn start(extra_yaml: &[&str]) -> Synapse {
        let python = venv_python();
        assert!(
            python.exists(),
            "Synapse is not installed: run `scripts/test` (it installs target/synapse-venv)"
        );
        let dir = scratch_dir("synapse");
        let port = free_port();
        fs::create_dir_all(dir.join("media")).expect("media dir");
        let log_yaml = dir.join("log.yaml");
        fs::write(
            &log_yaml,
            format!(
                "version: 1\nformatters:\n  f:\n    format: '%(asctime)s %(levelname)s %(name)s %(message)s'\n\
                 handlers:\n  file:\n    class: logging.FileHandler\n    formatter: f\n    filename: {}\n\
                 root:\n  level: WARNING\n  handlers: [file]\ndisable_existing_loggers: false\n",
                dir.join("homeserver.log").display()
            ),
        )
        .expect("log config");
        let rc = "{per_second: 10000, burst_count: 10000}";
        let mut yaml = format!(
            "server_name: localhost\n\
             pid_file: {dir}/homeserver.pid\n\
             public_baseurl: http://127.0.0.1:{port}/\n\
             listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    x_forwarded: false\n    resources:\n      - names: [client]\n        compress: false\n\
             database:\n  name: sqlite3\n  args:\n    database: ':memory:'\n\
             log_config: {log}\n\
             media_store_path: {dir}/media\n\
             signing_key_path: {dir}/signing.key\n\
             registration_shared_secret: {SHARED_SECRET}\n\
             enable_registration: false\n\
             report_stats: false\n\
             macaroon_secret_key: knock-e2e-macaroon\n\
             form_secret: knock-e2e-form\n\
             trusted_key_servers: []\n\
             federation_domain_whitelist: []\n\
             presence:\n  enabled: false\n\
             bcrypt_rounds: 4\n\
             default_room_version: '10'\n\
             jwt_config:\n  enabled: true\n  secret: {JWT_SECRET}\n  algorithm: HS256\n\
             rc_message: {rc}\n\
             rc_registration: {rc}\n\
             rc_login:\n  address: {rc}\n  account: {rc}\n  failed_attempts: {rc}\n\
             rc_joins:\n  local: {rc}\n  remote: {rc}\n\
             rc_joins_per_room: {rc}\n\
             rc_invites:\n  per_room: {rc}\n  per_user: {rc}\n  per_issuer: {rc}\n\
             rc_room_creation: {rc}\n\
             rc_admin_redaction: {rc}\n",
            dir = dir.display(),
            log = log_yaml.display(),
        );
        for line in extra_yaml {
            yaml.push_str(line);
            yaml.push('\n');
        }
        let config = dir.join("homeserver.yaml");
        fs::write(&config, yaml).expect("homeserver.yaml");
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .current_dir(&dir);
        let process = Guarded::spawn("TERM", &mut cmd, &dir.join("stdout.log"));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ok = agent()
                .get(&format!("{url}/_matrix/client/versions"))
                .call()
                .is_ok();
            if ok {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!(
                    "Synapse did not start:\n{}\n{}",
                    process.log_tail(),
                    fs::read_to_string(dir.join("homeserver.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut s = Synapse {
            url,
            bot: User {
                user_id: String::new(),
                token: String::new(),
                password: String::new(),
            },
            room_id: String::new(),
            dir,
            process: Mutex::new(process),
        };
        s.bot = s.register("knockbot", true);
        s.lift_rate_limits(&s.bot.user_id.clone());
        s.room_id = s.create_knock_room(&s.bot.clone());
        s
    }

    pub fn client(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let url = format!("{}{}", self.url, path);
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Content-Type", "application/json")];
        if !token.is_empty() {
            headers.push(("Authorization", auth.as_str()));
        }
        let body = body.map(|b| b.to_string());
        request(method, &url, &headers, body.as_deref().map(str::as_bytes))
    }

    /// Registers a user through the shared-secret admin API.
    pub fn register(&self, localpart: &str, admin: bool) -> User {
        let nonce = self
            .client("GET", "/_synapse/admin/v1/register", "", None)
            .json()["nonce"]
            .as_str()
            .expect("nonce")
            .to_owned();
        let password = format!("pw-{localpart}");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).expect("hmac");
        mac.update(nonce.as_bytes());
        mac.update(b"\0");
        mac.update(localpart.as_bytes());
        mac.update(b"\0");
        mac.update(password.as_bytes());
        mac.update(b"\0");
        mac.update(if admin { b"admin" } else { b"notadmin" });
        let mac = hex::encode(mac.finalize().into_bytes());
        let r = self.client(
            "POST",
            "/_synapse/admin/v1/register",
            "",
            Some(
                json!({"nonce": nonce, "username": localpart, "password": password,
                        "admin": admin, "mac": mac}),
            ),
        );
        assert_eq!(r.status, 200, "register {localpart}: {}", r.body);
        let v = r.json();
        User {
            user_id: v["user_id"].as_str().expect("user_id").to_owned(),
            token: v["access_token"].as_str().expect("token").to_owned(),
            password,
        }
    }

    /// Registers a user whose name is unique in this test run: `{prefix}{n}`.
    pub fn new_user(&self, prefix: &str) -> User {
        let n = USER_SEQ.fetch_add(1, Ordering::SeqCst);
        self.register(&format!("{prefix}{n}"), false)
    }

    pub fn lift_rate_limits(&self, user_id: &str) {
        let r = self.client(
            "POST",
            &format!(
                "/_synapse/admin/v1/users/{}/override_ratelimit",
                enc(user_id)
            ),
            &self.bot_token_or_admin(),
            Some(json!({"messages_per_second": 0, "burst_count": 0})),
        );
        assert_eq!(r.status, 200, "override ratelimit: {}", r.body);
    }

    fn bot_token_or_admin(&self) -> String {
        self.bot.token.clone()
    }

    /// A private room (version 10) whose join rule is `knock`.
    pub fn create_knock_room(&self, owner: &User) -> String {
        let r = self.client(
            "POST",
            "/_matrix/client/v3/createRoom",
            &owner.token,
            Some(json!({
                "preset": "private_chat",
                "room_version": "10",
                "name": "Knock test room",
                "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                   "content": {"join_rule": "knock"}}]
            })),
        );
        assert_eq!(r.status, 200, "createRoom: {}", r.body);
        r.json()["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Logs a user in with their password: a new device and access token.
    pub fn login(&self, user: &User) -> String {
        let r = self.client(
            "POST",
            "/_matrix/client/v3/login",
            "",
            Some(json!({"type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": user.user_id},
                        "password": user.password})),
        );
        assert_eq!(r.status, 200, "login: {}", r.body);
        r.json()["access_token"].as_str().expect("token").to_owned()
    }

    /// A membership as seen by someone in the room (`token`).
    pub fn membership_as(&self, token: &str, room_id: &str, user_id: &str) -> Option<String> {
        let r = self.client(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(room_id),
                enc(user_id)
            ),
            token,
            None,
        );
        match r.status {
            200 => r.json()["membership"].as_str().map(str::to_owned),
            404 => None,
            s => panic!("membership lookup answered {s}: {}", r.body),
        }
    }

    /// The user's membership in the room as Synapse reports it (to the bot), or None.
    pub fn membership(&self, room_id: &str, user_id: &str) -> Option<String> {
        self.membership_as(&self.bot.token, room_id, user_id)
    }

    pub fn wait_for_membership(&self, room_id: &str, user_id: &str, want: &str) {
        self.wait_for_membership_within(room_id, user_id, want, Duration::from_secs(30))
    }

    /// [`Self::wait_for_membership`] with its own timeout, for a test whose invites may need a
    /// retry or two with back-off (1 s, 2 s, 4 s, ...) when the whole suite loads the machine.
    pub fn wait_for_membership_within(
        &self,
        room_id: &str,
        user_id: &str,
        want: &str,
        timeout: Duration,
    ) {
        wait_until(&format!("{user_id} to be {want}"), timeout, || {
            (self.membership(room_id, user_id).as_deref() == Some(want)).then_some(())
        })
    }

    /// Every `m.room.member` event of the room's timeline, oldest first.
    pub fn member_events(&self, room_id: &str) -> Vec<Value> {
        let filter = enc(r#"{"types":["m.room.member"]}"#);
        let r = self.client(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000&filter={filter}",
                enc(room_id)
            ),
            &self.bot.token,
            None,
        );
        assert_eq!(r.status, 200, "messages: {}", r.body);
        let mut events = r.json()["chunk"].as_array().cloned().unwrap_or_default();
        events.reverse();
        events
    }

    /// How many invite events the room holds for this user.
    pub fn invite_count(&self, room_id: &str, user_id: &str) -> usize {
        self.member_events(room_id)
            .iter()
            .filter(|e| e["state_key"] == user_id && e["content"]["membership"] == "invite")
            .count()
    }

    /// A full `/sync` of `user`, as of now. Synapse keeps the answer to an initial sync for two
    /// minutes (`sync_response_cache_duration`) and gives it again to the same request, so a
    /// test that polls with a plain `/sync?timeout=0` keeps seeing the first answer; each call
    /// here sends a filter of its own, which Synapse caches apart.
    pub fn sync_now(&self, user: &User) -> Value {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let filter = enc(&format!(
            r#"{{"room":{{"timeline":{{"limit":{}}}}}}}"#,
            20 + n
        ));
        let r = self.client(
            "GET",
            &format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"),
            &user.token,
            None,
        );
        assert_eq!(r.status, 200, "sync: {}", r.body);
        r.json()
    }

    pub fn join(&self, user: &User, room_id: &str) {
        let r = self.client(
            "POST",
            &format!("/_matrix/client/v3/join/{}", enc(room_id)),
            &user.token,
            Some(json!({})),
        );
        assert_eq!(r.status, 200, "join: {}", r.body);
    }
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The worker under wrangler dev

pub struct Worker {
    pub url: String,
    pub persist: PathBuf,
    pub config: PathBuf,
    pub room_id: String,
    process: Option<Guarded>,
    port: u16,
}

impl Worker {
    /// Vars every test worker gets: the shared Synapse, its bot and room, no pacing.
    pub fn base_vars(s: &Synapse) -> Vec<(String, String)> {
        [
            ("NEW_ROOM_ID", s.room_id.as_str()),
            ("MATRIX_BASE_URL", s.url.as_str()),
            ("MATRIX_ACCESS_TOKEN", s.bot.token.as_str()),
            ("REQUEST_DELAY", "0"),
            ("MAX_REQUESTS_PER_WINDOW", "100000"),
            ("WAVE_MAX_KNOCKS", "100000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Starts `wrangler dev --local` on the prebuilt bundle, with exactly these vars (the
    /// developer's own .dev.vars is never read: the config lives in a scratch directory).
    pub fn start(vars: &[(String, String)]) -> Worker {
        Worker::start_in(scratch_dir("worker"), vars)
    }

    /// Starts wrangler with its state directory under `dir` (which may hold state already).
    fn start_in(dir: PathBuf, vars: &[(String, String)]) -> Worker {
        let persist = dir.join("state");
        let room_id = vars
            .iter()
            .find(|(k, _)| k == "NEW_ROOM_ID")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let config = write_wrangler_config(&dir, vars);
        let mut w = Worker {
            url: String::new(),
            persist,
            config,
            room_id,
            process: None,
            port: free_port(),
        };
        w.launch();
        w
    }

    /// Starts `wrangler dev` on state persisted earlier (a `--persist-to` directory packed with
    /// `tar -czf`), as a redeploy onto an existing deployment would find it.
    pub fn start_on_state(vars: &[(String, String)], state_tarball: &Path) -> Worker {
        let dir = scratch_dir("worker");
        let persist = dir.join("state");
        fs::create_dir_all(&persist).expect("persist dir");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&persist)
            .arg("-xzf")
            .arg(state_tarball)
            .status()
            .expect("tar");
        assert!(status.success(), "unpacking {}", state_tarball.display());
        Worker::start_in(dir, vars)
    }

    /// Starts wrangler; one start at a time (wrangler picks some internal ports itself, and two
    /// starting at once can collide), with one retry if a port was taken meanwhile.
    fn launch(&mut self) {
        static STARTING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        for attempt in 0..3 {
            match self.try_launch() {
                Ok(()) => return,
                Err(log) if attempt < 2 && log.contains("Address already in use") => {
                    self.port = free_port();
                }
                Err(log) => panic!("wrangler dev did not start:\n{log}"),
            }
        }
    }

    fn try_launch(&mut self) -> Result<(), String> {
        let root = repo_root();
        assert!(
            root.join("build/index.js").exists(),
            "the worker is not built: run `scripts/test` (it builds build/ first)"
        );
        let mut cmd = wrangler_dev(self.port, &self.persist, &self.config);
        static LAUNCH: AtomicU32 = AtomicU32::new(0);
        let log = self.config.parent().expect("config dir").join(format!(
            "wrangler-{}-{}.log",
            self.port,
            LAUNCH.fetch_add(1, Ordering::SeqCst)
        ));
        let mut process = Guarded::spawn("INT", &mut cmd, &log);
        self.url = format!("http://127.0.0.1:{}", self.port);
        let started = Instant::now();
        loop {
            if let Ok(r) = agent().get(&format!("{}/", self.url)).call() {
                if r.status() == 200 {
                    break;
                }
            }
            let tail = process.log_tail();
            if tail.contains("Address already in use")
                || started.elapsed() > Duration::from_secs(90)
            {
                process.stop();
                return Err(tail);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.process = Some(process);
        Ok(())
    }

    /// Restarts on the same state directory with other vars (a redeploy with new secrets).
    pub fn restart_with(&mut self, vars: &[(String, String)]) {
        self.stop();
        let dir = self.config.parent().expect("config dir").to_owned();
        self.config = write_wrangler_config(&dir, vars);
        self.launch();
    }

    /// Stops wrangler and starts it again on the same state directory and port.
    pub fn restart(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
        self.launch();
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| fs::read_to_string(&p.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// POSTs to the worker and checks the reply never leaks the room ID.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let r = request(
            "POST",
            &format!("{}{}", self.url, path),
            headers,
            Some(body),
        );
        self.assert_no_room_id(&r);
        r
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let r = request("GET", &format!("{}{}", self.url, path), headers, None);
        self.assert_no_room_id(&r);
        r
    }

    /// An admin call with `Authorization: Bearer <key>`: a POST of `body` as JSON, or a GET
    /// when there is no body.
    pub fn admin(&self, key: &str, path: &str, body: Option<Value>) -> Reply {
        let auth = format!("Bearer {key}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        match body {
            Some(b) => self.post(path, &headers, b.to_string().as_bytes()),
            None => self.get(path, &headers),
        }
    }

    pub fn assert_no_room_id(&self, r: &Reply) {
        if !self.room_id.is_empty() {
            assert!(
                !r.body.contains(&self.room_id),
                "a reply leaked the room ID: {}",
                r.body
            );
            let opaque = self.room_id.trim_start_matches('!');
            let opaque = opaque.split(':').next().unwrap_or(opaque);
            assert!(
                !r.body.contains(opaque),
                "a reply leaked the room ID: {}",
                r.body
            );
        }
    }
}

/// `wrangler dev --local` on the prebuilt bundle, on 127.0.0.1, with Knock's own logs shown and
/// no telemetry or network lookups.
pub fn wrangler_dev(port: u16, persist: &Path, config: &Path) -> Command {
    let root = repo_root();
    let mut cmd = Command::new(root.join("node_modules/.bin/node"));
    cmd.arg(root.join("node_modules/wrangler/bin/wrangler.js"))
        .args(["dev", "--local", "--ip", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--persist-to")
        .arg(persist)
        .arg("--inspector-port")
        .arg(free_port().to_string())
        .arg("--config")
        .arg(config)
        .args([
            "--test-scheduled",
            "--show-interactive-dev-session=false",
            "--log-level",
            "log",
        ])
        .env("KNOCK_PREBUILT", "1")
        .env("WRANGLER_SEND_METRICS", "false")
        .env("WRANGLER_SEND_ERROR_REPORTS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("NO_COLOR", "1")
        .current_dir(config.parent().expect("config dir"));
    cmd
}

fn write_wrangler_config(dir: &Path, vars: &[(String, String)]) -> PathBuf {
    let source = fs::read_to_string(repo_root().join("wrangler.toml")).expect("wrangler.toml");
    let mut out = String::new();
    let mut skip_section = false;
    for line in source.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            skip_section = trimmed == "[vars]" || trimmed == "[build]";
            if skip_section {
                continue;
            }
        }
        if skip_section {
            continue;
        }
        if trimmed.starts_with("main ") || trimmed.starts_with("main=") {
            out.push_str(&format!(
                "main = \"{}\"\n",
                repo_root().join("build/index.js").display()
            ));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("\n[vars]\n");
    for (k, v) in vars {
        // `NAME@table` with a JSON object: written as a TOML table, which wrangler passes to
        // the worker as an object (the way an operator writes KNOCK_ROOMS in wrangler.toml).
        match k.strip_suffix("@table") {
            Some(name) => {
                let value: Value = serde_json::from_str(v).expect("a JSON object for a table");
                out.push_str(&format!("{name} = {}\n", toml_inline(&value)));
            }
            None => out.push_str(&format!("{k} = {}\n", toml_string(v))),
        }
    }
    let path = dir.join("wrangler.toml");
    let mut f = fs::File::create(&path).expect("wrangler.toml");
    f.write_all(out.as_bytes()).expect("write wrangler.toml");
    path
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// A JSON value as a TOML inline value (tables inline, keys quoted).
fn toml_inline(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_string(k), toml_inline(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(toml_inline).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::String(s) => toml_string(s),
        other => other.to_string(),
    }
}

/// Wall-clock time in unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

//! The moderator page (`/admin/`) in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/setup.sh), driven over WebDriver by `fantoccini`,
//! against the real worker and Synapse. It signs in, acts from the page and checks what Synapse
//! and the worker then hold; it takes the README's screenshots (desktop and phone width) into
//! target/screenshots/ (docs/screenshots/ with `KNOCK_UPDATE_SCREENSHOTS=1`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::support::{
    enc, free_port, repo_root, request, scratch_dir, synapse, wait_until, Guarded, User, Worker,
};

const API_KEY: &str = "web-ui-e2e-key";

/// chromedriver and Chromium, stopped with the test.
struct Browser {
    client: Client,
    driver_url: String,
    session: String,
    _driver: Guarded,
}

fn chromedriver() -> PathBuf {
    for p in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("chromedriver is not installed: run `scripts/setup.sh` (it installs Debian's chromium-driver)");
}

async fn start_browser() -> Browser {
    let dir = scratch_dir("chromium");
    let port = free_port();
    let mut cmd = Command::new(chromedriver());
    cmd.arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1");
    let driver = Guarded::spawn("TERM", &mut cmd, &dir.join("chromedriver.log"));
    let driver_url = format!("http://127.0.0.1:{port}");
    wait_until("chromedriver", Duration::from_secs(20), || {
        crate::support::agent()
            .get(&format!("{driver_url}/status"))
            .call()
            .ok()
            .map(|_| ())
    });
    let profile = dir.join("profile");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let caps = caps.as_object().cloned().expect("capabilities");
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(caps);
    let client = builder
        .connect(&driver_url)
        .await
        .expect("a WebDriver session");
    let session = client
        .session_id()
        .await
        .expect("session id")
        .expect("a session id");
    Browser {
        client,
        driver_url,
        session,
        _driver: driver,
    }
}

impl Browser {
    /// The browser console's entries since the last call (chromedriver's log endpoint).
    fn console(&self) -> Vec<Value> {
        let r = request(
            "POST",
            &format!("{}/session/{}/se/log", self.driver_url, self.session),
            &[("Content-Type", "application/json")],
            Some(br#"{"type":"browser"}"#),
        );
        assert_eq!(r.status, 200, "browser log: {}", r.body);
        r.json()["value"].as_array().cloned().unwrap_or_default()
    }

    /// Asserts the console holds no error or warning since the last look.
    fn assert_quiet_console(&self, when: &str) {
        let noisy: Vec<Value> = self
            .console()
            .into_iter()
            .filter(|e| e["level"] != "INFO" && e["level"] != "DEBUG")
            .collect();
        assert!(noisy.is_empty(), "console messages {when}: {noisy:#?}");
    }

    /// Makes the page see the system's colour scheme as `scheme` (Chrome DevTools, through
    /// chromedriver's CDP endpoint).
    fn color_scheme(&self, scheme: &str) {
        let body = json!({"cmd": "Emulation.setEmulatedMedia",
                          "params": {"features": [{"name": "prefers-color-scheme", "value": scheme}]}});
        let r = request(
            "POST",
            &format!(
                "{}/session/{}/goog/cdp/execute",
                self.driver_url, self.session
            ),
            &[("Content-Type", "application/json")],
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(r.status, 200, "emulate {scheme}: {}", r.body);
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .expect("text")
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect(script)
    }

    /// Waits until `css` holds `needle` in its text.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    if t.contains(needle) {
                        return t;
                    }
                    if start.elapsed() > Duration::from_secs(20) {
                        panic!("{css} never said {needle:?}; it says {t:?}");
                    }
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!("{css} never appeared");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot of the view at this width into target/screenshots/, or into the
    /// README's docs/screenshots/ with `KNOCK_UPDATE_SCREENSHOTS=1`.
    async fn shoot(&self, name: &str, width: u32) {
        self.client
            .set_window_size(width, if width < 500 { 780 } else { 900 })
            .await
            .expect("window size");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = match std::env::var("KNOCK_UPDATE_SCREENSHOTS").as_deref() {
            Ok("1") => repo_root().join("docs/screenshots"),
            _ => repo_root().join("target/screenshots"),
        };
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Screenshots and audits the view at desktop and phone width, then goes back to desktop.
    async fn check_view(&self, view: &str, name: &str) {
        self.shoot(&format!("{name}-desktop"), 1280).await;
        self.audit(view).await;
        self.shoot(&format!("{name}-phone"), 360).await;
        self.audit(&format!("{view} at 360 px")).await;
        self.client
            .set_window_size(1280, 900)
            .await
            .expect("window size");
    }

    /// Checks a view the way an audit would: a language, one h1, every control with a name,
    /// unique ids, a skip link first in the tab order, no sideways scrolling at 360 px, and
    /// (with `KNOCK_AXE_JS` pointing at axe-core's `axe.min.js`) no axe-core violations.
    async fn audit(&self, view: &str) {
        let report = self
            .js(
                r##"
                const out = [];
                if (!document.documentElement.lang) out.push("no lang");
                if (document.querySelectorAll("h1").length !== 1) out.push("not one h1");
                const name = el => (el.getAttribute("aria-label") || "").trim() ||
                  (el.labels && [...el.labels].map(l => l.textContent).join(" ").trim()) ||
                  (el.textContent || "").trim() || el.getAttribute("title") || "";
                for (const el of document.querySelectorAll("input:not([type=hidden]), select, button, a[href]")) {
                  if (!name(el)) out.push("unnamed " + el.outerHTML.slice(0, 80));
                }
                const ids = [...document.querySelectorAll("[id]")].map(e => e.id);
                if (new Set(ids).size !== ids.length) out.push("duplicate ids");
                const skip = document.querySelector("a.skip");
                if (document.querySelector("nav") && !skip) out.push("no skip link");
                if (document.documentElement.scrollWidth > window.innerWidth + 1)
                  out.push("scrolls sideways: " + document.documentElement.scrollWidth + " > " + window.innerWidth +
                    " because of " + [...document.querySelectorAll("body *")]
                      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                      .map(e => e.tagName + "." + e.className + "#" + e.id + " " + Math.round(e.getBoundingClientRect().right))
                      .slice(0, 8).join(", ") + "; text: " + (() => {
                        const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
                        const wide = [];
                        while (w.nextNode()) {
                          const r = document.createRange(); r.selectNodeContents(w.currentNode);
                          if (r.getBoundingClientRect().right > window.innerWidth + 1) wide.push(w.currentNode.textContent.slice(0, 60));
                        }
                        return wide.slice(0, 5).join(" | ");
                      })());
                return out;
                "##,
            )
            .await;
        assert_eq!(report, json!([]), "audit of {view}");
        if let Ok(axe) = std::env::var("KNOCK_AXE_JS") {
            let source = std::fs::read_to_string(&axe).expect("KNOCK_AXE_JS");
            self.client
                .execute(&source, vec![])
                .await
                .expect("axe-core loads");
            let result = self
                .client
                .execute_async(
                    "const done = arguments[arguments.length - 1];\
                     axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => \
                       ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))));",
                    vec![],
                )
                .await
                .expect("axe-core runs");
            eprintln!("axe-core on {view}: {result}");
            assert_eq!(result, json!([]), "axe-core violations on {view}");
        }
    }
}

fn set_display_name(user: &User, name: &str) {
    let s = synapse();
    let r = s.client(
        "PUT",
        &format!(
            "/_matrix/client/v3/profile/{}/displayname",
            enc(&user.user_id)
        ),
        &user.token,
        Some(json!({ "displayname": name })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn form_knock(w: &Worker, user_id: &str) {
    let r = w.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({ "matrix_id": user_id }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

fn cron(w: &Worker) {
    let r = w.get("/cdn-cgi/handler/scheduled?cron=*%2F5+*+*+*+*", &[]);
    assert_eq!(r.status, 200, "cron trigger: {}", r.body);
}

fn latest_verdict(w: &Worker, user_id: &str) -> Value {
    let r = w.admin(API_KEY, &format!("/knocks?user_id={}", enc(user_id)), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["knocks"][0]["verdict"].clone()
}

#[test]
fn a_moderator_signs_in_and_acts_from_the_page_in_a_real_browser() {
    let s = synapse();
    let room = s.create_knock_room(&s.bot);
    let mut vars = Worker::base_vars(s);
    vars.retain(|(k, _)| k != "NEW_ROOM_ID");
    for (k, v) in [
        ("NEW_ROOM_ID", room.as_str()),
        ("API_KEY", API_KEY),
        ("INVITE_CHECK_INTERVAL", "1ms"),
        ("BLOCKLIST_SCAN_INTERVAL", "1h"),
    ] {
        vars.push((k.into(), v.into()));
    }
    let w = Worker::start(&vars);

    // A namesake of a blocked person: held for a moderator.
    let r = w.admin(
        API_KEY,
        "/block_user",
        Some(json!({"user_id": "@matthew41:localhost"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let namesake = s.register("matthew63", false);
    // With an answer of the form's besides the ID: shown beside the held knock, escaped.
    let r = w.post(
        "/invite_from_form",
        &[("Content-Type", "application/json")],
        json!({ "matrix_id": namesake.user_id, "why": "Rust <meetups>" })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let namesake2 = s.register("matthew64", false);
    form_knock(&w, &namesake2.user_id);
    // Someone blocked outright knocks too: a blocked verdict with its rule.
    let n = std::process::id();
    let spammer = s.register(&format!("webuispam{n}"), false);
    let r = w.admin(
        API_KEY,
        "/block_user",
        Some(json!({"user_id": spammer.user_id, "reason": "spam"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    form_knock(&w, &spammer.user_id);
    // A knocker whose display name is markup: invited, and shown with the name as text.
    let hostile = "<script>window.__knockXss=1</script><img src=x onerror=window.__knockXss=2>Eve";
    let eve = s.register(&format!("webuieve{n}"), false);
    set_display_name(&eve, hostile);
    form_knock(&w, &eve.user_id);
    // A member (joined outside Knock) with the same kind of display name; the room observes it.
    let member = s.register(&format!("webuimember{n}"), false);
    set_display_name(&member, hostile);
    let r = s.client(
        "POST",
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
        &s.bot.token,
        Some(json!({ "user_id": member.user_id })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.join(&member, &room);
    s.wait_for_membership(&room, &eve.user_id, "invite");
    wait_until(
        "the room to observe its member",
        Duration::from_secs(30),
        || {
            cron(&w);
            let m = w.admin(
                API_KEY,
                "/blocklist/preview",
                Some(json!({"user_id": member.user_id})),
            );
            (m.json()["preview"]["caught"]
                .as_array()
                .is_some_and(|c| !c.is_empty()))
            .then_some(())
        },
    );
    wait_until("the held knock", Duration::from_secs(20), || {
        (latest_verdict(&w, &namesake.user_id) == "held"
            && latest_verdict(&w, &namesake2.user_id) == "held")
            .then_some(())
    });
    wait_until(
        "Eve's knock to record her display name",
        Duration::from_secs(20),
        || {
            let r = w.admin(API_KEY, "/pending_invites", None);
            r.body.contains("window.__knockXss").then_some(())
        },
    );

    // Outside the browser: a wrong key is refused, on the sign-in form and as a bearer key.
    let r = w.post(
        "/admin/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"key=not-the-key",
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("That is not the admin key."), "{}", r.body);
    assert!(
        !r.headers.contains_key("set-cookie"),
        "no session for a wrong key"
    );
    let csp = r
        .headers
        .get("content-security-policy")
        .cloned()
        .unwrap_or_default();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(
        r.headers.get("referrer-policy").map(String::as_str),
        Some("no-referrer")
    );
    assert_eq!(w.admin("wrong", "/held_knocks", None).status, 401);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let b = start_browser().await;
        let c = &b.client;
        let base = &w.url;

        // Signed out, every view leads to the sign-in page.
        c.goto(&format!("{base}/admin/")).await.expect("goto");
        assert_eq!(b.path().await, "/admin/login");
        b.check_view("the sign-in page", "sign-in").await;
        b.assert_quiet_console("on the sign-in page");

        // A wrong key is refused in the browser too.
        let key = c.find(Locator::Id("key")).await.expect("key field");
        key.send_keys("wrong-key").await.expect("type");
        c.find(Locator::Css("form button")).await.expect("button").click().await.expect("click");
        b.wait_text("p.error", "That is not the admin key.").await;
        assert!(c.get_named_cookie("knock_admin").await.is_err(), "no cookie for a wrong key");
        b.console(); // The refused sign-in's 401, logged by Chromium on purpose.

        // The right key: a session cookie, HttpOnly, Secure and SameSite=Strict.
        let key = c.find(Locator::Id("key")).await.expect("key field");
        key.send_keys(API_KEY).await.expect("type");
        c.find(Locator::Css("form button")).await.expect("button").click().await.expect("click");
        b.wait_text("h1", "Held").await;
        assert_eq!(b.path().await, "/admin/");
        let cookie = c.get_named_cookie("knock_admin").await.expect("the session cookie");
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.secure(), Some(true), "Chromium keeps Secure cookies on http://127.0.0.1");
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
        let session_cookie = format!("knock_admin={}", cookie.value());
        assert_eq!(b.js("return document.cookie").await, json!(""), "scripts cannot read it");

        // The cookie is the session's id signed with the admin key: the id alone, or the id
        // with a made-up tag, is no session (refused before any session object is asked).
        let value = cookie.value().to_owned();
        let (id, tag) = value.split_once('.').expect("the cookie is <id>.<tag>");
        assert_eq!((id.len(), tag.len()), (64, 32), "{value}");
        let r = w.get("/held_knocks", &[("Cookie", session_cookie.as_str())]);
        assert_eq!(r.status, 200, "the signed cookie works for the admin API: {}", r.body);
        for forged in [format!("knock_admin={id}"), format!("knock_admin={id}.{}", "0".repeat(32))] {
            let r = w.get("/held_knocks", &[("Cookie", forged.as_str())]);
            assert_eq!(r.status, 401, "{forged}: {}", r.body);
            assert!(r.body.contains("session has ended"), "{}", r.body);
            let r = w.get("/admin/", &[("Cookie", forged.as_str())]);
            assert_eq!(r.status, 303, "{forged}");
        }

        // Held: the namesake, with the rule that held them.
        let row = format!("tr[data-user=\"{}\"]", namesake.user_id);
        let held_text = b.text(&row).await;
        assert!(held_text.contains("matches blocked @matthew41:localhost"), "{held_text}");
        assert!(held_text.contains("why") && held_text.contains("Rust <meetups>"), "{held_text}");
        b.check_view("Held", "held").await;
        b.assert_quiet_console("on Held");

        // A same-site POST with the session cookie but no CSRF token is refused.
        let refused = c
            .execute_async(
                "const user = arguments[0], done = arguments[1]; fetch('/approve_knock', {method: 'POST', \
                 headers: {'Content-Type': 'application/json'}, body: JSON.stringify({user_id: user})}) \
                 .then(r => r.text().then(t => done([r.status, t])));",
                vec![json!(namesake.user_id)],
            )
            .await
            .expect("fetch");
        assert_eq!(refused[0], 403, "{refused}");
        assert!(refused[1].as_str().unwrap_or_default().contains("CSRF"), "{refused}");
        assert_eq!(latest_verdict(&w, &namesake.user_id), "held", "the refused POST changed nothing");
        b.console(); // The deliberate 403s.

        // Approve from the page, with a reason: Synapse shows the invite.
        c.find(Locator::Id("reason"))
            .await
            .expect("reason field")
            .send_keys("known from the forum")
            .await
            .expect("type");
        c.find(Locator::Css(&format!("{row} button[data-action=approve]")))
            .await
            .expect("approve button")
            .click()
            .await
            .expect("click");
        b.wait_text("#status", "Approved:").await;
        s.wait_for_membership(&room, &namesake.user_id, "invite");
        b.assert_quiet_console("after approving");

        // Reject the other one as a selection, with a reason: nobody is invited, and the reason
        // is kept with the knock.
        c.find(Locator::Css(&format!("input[name=user][value=\"{}\"]", namesake2.user_id)))
            .await
            .expect("checkbox")
            .click()
            .await
            .expect("select");
        let reason = c.find(Locator::Id("reason")).await.expect("reason field");
        reason.clear().await.expect("clear");
        reason.send_keys("not from our community").await.expect("type");
        c.find(Locator::Css("button[data-bulk=reject]"))
            .await
            .expect("reject selected")
            .click()
            .await
            .expect("click");
        b.wait_text("#status", "Rejected:").await;
        wait_until("the rejection", Duration::from_secs(10), || {
            (latest_verdict(&w, &namesake2.user_id) == "rejected").then_some(())
        });
        assert_eq!(s.membership(&room, &namesake2.user_id), None, "never invited");
        b.assert_quiet_console("after rejecting");

        // Recent knocks: verdicts with their rules; a blocked one links to its entry.
        c.goto(&format!("{base}/admin/knocks?verdict=blocked")).await.expect("goto");
        let table = b.text("table").await;
        assert!(table.contains(&spammer.user_id) && table.contains("blocked"), "{table}");
        assert!(!table.contains(&eve.user_id), "the filter keeps only blocked knocks: {table}");
        let link = c
            .find(Locator::LinkText("the entry"))
            .await
            .expect("a link to the entry")
            .attr("href")
            .await
            .expect("href")
            .unwrap_or_default();
        assert_eq!(link, format!("/admin/blocklist?q={}", enc(&spammer.user_id)));
        c.goto(&format!("{base}/admin/knocks?user_id={}", enc(&eve.user_id))).await.expect("goto");
        let table = b.text("table").await;
        assert!(table.contains(&eve.user_id) && !table.contains(&spammer.user_id), "{table}");
        // Eve's display name is shown as text, and nothing in it ran.
        assert!(table.contains("<script>window.__knockXss=1</script>"), "{table}");
        assert_eq!(b.js("return window.__knockXss === undefined").await, json!(true));
        c.goto(&format!("{base}/admin/knocks")).await.expect("goto");
        let all = b.text("table").await;
        assert!(
            all.contains("approved by the moderator page (known from the forum)"),
            "who approved and why is kept with the knock: {all}"
        );
        assert!(
            all.contains("rejected by the moderator page: not from our community"),
            "who rejected and why is kept with the knock: {all}"
        );
        b.check_view("Recent knocks", "knocks").await;
        // The system's dark mode: the same view, audited again (contrast included).
        b.color_scheme("dark");
        let bg = b.js("return getComputedStyle(document.body).backgroundColor").await;
        assert_eq!(bg, json!("rgb(18, 18, 20)"), "dark mode is followed");
        b.check_view("Recent knocks in dark mode", "knocks-dark").await;
        b.color_scheme("light");

        // Block-list: the entry the link named, and a live preview of what a new one catches.
        c.goto(&format!("{base}{link}")).await.expect("goto");
        let entries = b.text("table").await;
        assert!(entries.contains(&spammer.user_id), "{entries}");
        c.goto(&format!("{base}/admin/blocklist")).await.expect("goto");
        let pattern = c.find(Locator::Id("pattern")).await.expect("pattern field");
        pattern.send_keys("@webui*:localhost").await.expect("type");
        let preview = b.wait_text("#preview", &eve.user_id).await;
        assert!(preview.contains("a recent knock"), "{preview}");
        assert!(preview.contains(&spammer.user_id), "the glob names both knocks: {preview}");
        b.check_view("Block-list", "blocklist").await;
        // Now the member: the preview names them with their display name, as text.
        pattern.clear().await.expect("clear");
        pattern.send_keys(&member.user_id).await.expect("type");
        let preview = b.wait_text("#preview", "a member").await;
        assert!(preview.contains("<script>window.__knockXss=1</script>"), "{preview}");
        assert_eq!(b.js("return window.__knockXss === undefined").await, json!(true));
        assert_eq!(
            b.js("return document.querySelectorAll('#preview script, #preview img').length").await,
            json!(0)
        );
        // Block them from the page: they are kicked.
        c.find(Locator::Css("#add-entry button[type=submit]"))
            .await
            .expect("block button")
            .click()
            .await
            .expect("click");
        b.wait_text("#status", "Blocked").await;
        s.wait_for_membership(&room, &member.user_id, "leave");
        let list = w.admin(API_KEY, "/blocklist?format=txt", None).body;
        assert!(list.contains(&member.user_id), "{list}");
        b.assert_quiet_console("after blocking");

        // Import a text file from the page, find the entry, export, and remove it again.
        let imported = format!("@webuiimport{n}:localhost");
        let file = scratch_dir("import").join("list.txt");
        std::fs::write(&file, format!("{imported} # imported from the page\n")).expect("import file");
        c.find(Locator::Id("import-file"))
            .await
            .expect("file field")
            .send_keys(&file.display().to_string())
            .await
            .expect("choose the file");
        c.find(Locator::Css("#import button"))
            .await
            .expect("import button")
            .click()
            .await
            .expect("click");
        b.wait_text("#status", "Imported").await;
        let list = w.admin(API_KEY, "/blocklist?format=txt", None).body;
        assert!(list.contains(&imported), "{list}");
        let export = c
            .execute_async(
                "const done = arguments[0]; fetch('/blocklist?format=txt').then(r => r.text()).then(done);",
                vec![],
            )
            .await
            .expect("export");
        assert!(export.as_str().is_some_and(|t| t.contains(&imported)), "{export}");
        c.goto(&format!("{base}/admin/blocklist?q={}", enc(&imported)))
            .await
            .expect("goto");
        let rows = b.text("table").await;
        assert!(rows.contains(&imported) && rows.contains("imported from the page"), "{rows}");
        assert!(!rows.contains(&member.user_id), "the search keeps one entry: {rows}");
        c.find(Locator::Css("button[data-action=unblock]"))
            .await
            .expect("remove button")
            .click()
            .await
            .expect("click");
        b.wait_text("#status", "Removed").await;
        let list = w.admin(API_KEY, "/blocklist?format=txt", None).body;
        assert!(!list.contains(&imported), "{list}");
        b.assert_quiet_console("after import and removal");

        // Invites: the approved namesake and Eve wait; rescind Eve's from the page.
        c.goto(&format!("{base}/admin/invites")).await.expect("goto");
        let table = b.text("table").await;
        assert!(table.contains(&namesake.user_id) && table.contains(&eve.user_id), "{table}");
        b.check_view("Invites", "invites").await;
        c.find(Locator::Css(&format!("tr[data-user=\"{}\"] button[data-action=rescind]", eve.user_id)))
            .await
            .expect("rescind button")
            .click()
            .await
            .expect("click");
        b.wait_text("#status", "rescinded").await;
        s.wait_for_membership(&room, &eve.user_id, "leave");

        // Health: the login, the queue and the last cron run.
        c.goto(&format!("{base}/admin/health")).await.expect("goto");
        let facts = b.text("main").await;
        assert!(
            facts.contains("running") && facts.contains("(access_token mode)") && facts.contains("logged in"),
            "{facts}"
        );
        assert!(facts.contains("ran"), "the last cron run is shown: {facts}");
        b.check_view("Health", "health").await;
        b.assert_quiet_console("on every view");

        // Keyboard: the first Tab reaches the skip link.
        b.js("document.activeElement.blur(); return null").await;
        let tab = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: '\u{e004}' })
            .then(KeyAction::Up { value: '\u{e004}' });
        c.perform_actions(tab).await.expect("tab");
        assert_eq!(b.js("return document.activeElement.className").await, json!("skip"));

        // Sign out: the session ends at once, and the views lead to the sign-in page again.
        c.find(Locator::Css("form.logout button")).await.expect("sign out").click().await.expect("click");
        b.wait_text("h1", "Sign in").await;
        c.goto(&format!("{base}/admin/knocks")).await.expect("goto");
        assert_eq!(b.path().await, "/admin/login");
        let r = w.get("/held_knocks", &[("Cookie", session_cookie.as_str())]);
        assert_eq!(r.status, 401, "the old cookie is dead: {}", r.body);
        let r = w.get("/admin/", &[("Cookie", session_cookie.as_str())]);
        assert_eq!(r.status, 303);
        assert_eq!(r.headers.get("location").map(String::as_str), Some("/admin/login"));
        b.client.clone().close().await.expect("close the browser");
    });

    // Failed keys are limited per address: ten wrong keys, then even the right one must wait
    // (the sign-in asks the limiter before it looks at the key). Other addresses are not held up.
    let form = "application/x-www-form-urlencoded";
    let guesser = [("Content-Type", form), ("CF-Connecting-IP", "198.51.100.7")];
    for i in 0..10 {
        let r = w.post("/admin/login", &guesser, b"key=guess");
        assert_eq!(r.status, 401, "wrong key {i}: {}", r.body);
    }
    let r = w.post("/admin/login", &guesser, b"key=guess");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    let right = format!("key={API_KEY}");
    let r = w.post("/admin/login", &guesser, right.as_bytes());
    assert_eq!(
        r.status, 429,
        "a locked-out address cannot sign in, even with the key"
    );
    assert!(!r.headers.contains_key("set-cookie"));
    let r = w.get(
        "/held_knocks",
        &[
            ("Authorization", "Bearer guess"),
            ("CF-Connecting-IP", "198.51.100.7"),
        ],
    );
    assert_eq!(r.status, 429, "wrong bearer keys count too: {}", r.body);
    let r = w.post("/admin/login", &[("Content-Type", form)], right.as_bytes());
    assert_eq!(r.status, 303, "another address signs in: {}", r.body);
    assert!(r
        .headers
        .get("set-cookie")
        .is_some_and(|c| c.contains("HttpOnly")));
}

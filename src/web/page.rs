//! The moderator page's views as HTML, rendered from the admin API's JSON answers.
//!
//! Each view is readable without JavaScript; buttons carry `data-*` attributes that the page's
//! script turns into admin API calls. Every value from outside (IDs, display names, reasons,
//! rules, file contents) goes through [`escape`], in text and in attributes alike.

use serde_json::Value;

use crate::domain::lifecycle::Status;
use crate::domain::moderation::notices::escape;

/// What every signed-in view needs besides its data.
pub struct Ctx<'a> {
    /// The room a room-specific view is about (`?room=`), if one was asked for.
    pub room: Option<&'a str>,
    /// Every room's label, the default room's first.
    pub rooms: &'a [String],
    pub csrf: &'a str,
    pub now: u64,
}

/// The views, in the navigation's order: path, title.
pub const VIEWS: [(&str, &str); 5] = [
    ("/admin/", "Held"),
    ("/admin/knocks", "Recent knocks"),
    ("/admin/blocklist", "Block-list"),
    ("/admin/invites", "Invites"),
    ("/admin/health", "Health"),
];

fn head(title: &str, csrf: Option<&str>) -> String {
    let meta = csrf
        .map(|t| format!("<meta name=\"csrf-token\" content=\"{}\">", escape(t)))
        .unwrap_or_default();
    let script = if csrf.is_some() {
        "<script src=\"/admin/app.js\" defer></script>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">{meta}\
         <title>{} · Knock</title><link rel=\"icon\" href=\"/admin/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/admin/app.css\">{script}</head>",
        escape(title)
    )
}

/// A query string for `path` with the room (if any) and `extra` pairs, percent-encoded.
pub fn link(path: &str, room: Option<&str>, extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(r) = room {
        q.append_pair("room", r);
    }
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    }
}

/// A whole signed-in page: navigation, room choice, sign-out, and `body` under `title`.
/// The hidden field that keeps a form on the page's room, if it names one.
fn room_field(ctx: &Ctx) -> String {
    ctx.room
        .map(|r| {
            format!(
                "<input type=\"hidden\" name=\"room\" value=\"{}\">",
                escape(r)
            )
        })
        .unwrap_or_default()
}

pub fn layout(ctx: &Ctx, current: &str, title: &str, body: &str) -> String {
    let mut nav = String::new();
    for (path, name) in VIEWS {
        let here = if path == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        nav.push_str(&format!(
            "<li><a href=\"{}\"{here}>{name}</a></li>",
            escape(&link(path, ctx.room, &[]))
        ));
    }
    let rooms = if ctx.rooms.len() > 1 {
        let chosen = ctx.room.unwrap_or(ctx.rooms[0].as_str());
        let options: String = ctx
            .rooms
            .iter()
            .map(|r| {
                let sel = if r == chosen { " selected" } else { "" };
                format!("<option{sel}>{}</option>", escape(r))
            })
            .collect();
        format!(
            "<form method=\"get\" action=\"{}\" class=\"rooms\"><label>Room \
             <select name=\"room\">{options}</select></label> <button>Show</button></form>",
            escape(current)
        )
    } else {
        String::new()
    };
    format!(
        "{}<body data-room=\"{}\"><a class=\"skip\" href=\"#main\">Skip to the content</a>\
         <header><p class=\"brand\">Knock</p><nav aria-label=\"Views\"><ul>{nav}</ul></nav>{rooms}\
         <form method=\"post\" action=\"/admin/logout\" class=\"logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Sign out</button></form></header>\
         <main id=\"main\"><h1>{}</h1>\
         <noscript><p class=\"note\">Reading works without JavaScript; the buttons need it.</p></noscript>\
         <p id=\"status\" role=\"status\" aria-live=\"polite\"></p>{body}</main></body></html>",
        head(title, Some(ctx.csrf)),
        escape(ctx.room.unwrap_or("")),
        escape(ctx.csrf),
        escape(title),
    )
}

/// The sign-in page, with what went wrong last time (if anything).
pub fn login(message: Option<&str>) -> String {
    let msg = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    format!(
        "{}<body><main id=\"main\" class=\"narrow\"><h1>Sign in to Knock</h1>\
         <p>Enter the admin key (<code>API_KEY</code>) once. This browser then stays signed in \
         until you sign out or leave it unused for 12 hours.</p>{msg}\
         <form method=\"post\" action=\"/admin/login\"><p><label for=\"key\">Admin key</label>\
         <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" \
         required autofocus></p><p><button>Sign in</button></p></form></main></body></html>",
        head("Sign in", None)
    )
}

/// A page that says what went wrong, with a way back.
pub fn problem(title: &str, message: &str) -> String {
    format!(
        "{}<body><main id=\"main\" class=\"narrow\"><h1>{}</h1><p>{}</p>\
         <p><a href=\"/admin/\">Back to Knock</a></p></main></body></html>",
        head(title, None),
        escape(title),
        escape(message)
    )
}

fn s(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

/// A value from outside as escaped text; "—" when absent.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) if s.is_empty() => "—".into(),
        Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    }
}

/// Unix milliseconds as a UTC date and time, in a `<time>` element.
pub fn when(ms: &Value) -> String {
    let Some(ms) = ms.as_u64().filter(|m| *m > 0) else {
        return "—".into();
    };
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    let (hh, mm) = (rest / 3600, rest % 3600 / 60);
    format!(
        "<time datetime=\"{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{:02}Z\">{y:04}-{m:02}-{d:02} \
         {hh:02}:{mm:02} UTC</time>",
        rest % 60
    )
}

/// Days since 1970-01-01 as (year, month, day) (Howard Hinnant's `civil_from_days`).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A duration in seconds, short ("45 s", "12 min", "5 h", "3 d").
pub fn age(secs: &Value) -> String {
    let Some(s) = secs.as_u64() else {
        return "—".into();
    };
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", s / 60),
        7_200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// The block-list entry a verdict's explanation names ("… matches blocked @x:y (exact) …").
pub fn matched_entry(note: &str) -> Option<&str> {
    let rest = &note[note.find("matches blocked ")? + "matches blocked ".len()..];
    let end = rest.find(" (").unwrap_or(rest.len());
    let entry = rest[..end].trim();
    (!entry.is_empty()).then_some(entry)
}

/// Who: the Matrix ID, and the display name when one is known.
fn who(k: &Value) -> String {
    let mut out = format!("<code>{}</code>", text(&k["user_id"]));
    if let Some(dn) = s(&k["display_name"]) {
        out.push_str(&format!(" <span class=\"dn\">{}</span>", escape(dn)));
    }
    out
}

/// Why: the verdict's rule or reason, and the knock's note when it says something else.
fn why(k: &Value) -> String {
    let reason = s(&k["reason"]);
    let note = s(&k["note"]).filter(|n| Some(*n) != reason);
    match (reason, note) {
        (None, None) => "—".into(),
        (Some(r), None) => escape(r),
        (None, Some(n)) => escape(n),
        (Some(r), Some(n)) => format!("{}<br><span class=\"note\">{}</span>", escape(r), escape(n)),
    }
}

/// The form's answers a held knock came with (none for a native knock).
fn answers(k: &Value) -> String {
    let list = k["answers"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "—".into();
    }
    let mut out = String::from("<dl class=\"answers\">");
    for a in &list {
        out.push_str(&format!(
            "<dt>{}</dt><dd>{}</dd>",
            text(&a["question"]),
            text(&a["answer"])
        ));
    }
    out.push_str("</dl>");
    out
}

fn empty(message: &str) -> String {
    format!("<p class=\"empty\">{}</p>", escape(message))
}

/// Held: knocks waiting for a moderator (join wave, manual policy, weak block-list evidence),
/// and members the block-list scan reported.
pub fn held(ctx: &Ctx, v: &Value) -> String {
    let held = v["held"].as_array().cloned().unwrap_or_default();
    let mut body = String::new();
    if held.is_empty() {
        body.push_str(&empty("No knock is held for a moderator."));
    } else {
        body.push_str(
            "<form id=\"held-form\" class=\"bulk\"><div class=\"table\"><table>\
             <caption>Knocks held for a moderator, oldest first</caption><thead><tr>\
             <th scope=\"col\">Select</th>\
             <th scope=\"col\">Who</th><th scope=\"col\">Why it is held</th><th scope=\"col\">Form answers</th><th scope=\"col\">Source</th>\
             <th scope=\"col\">Received</th><th scope=\"col\">Decide</th></tr></thead><tbody>",
        );
        for k in &held {
            let user = text(&k["user_id"]);
            body.push_str(&format!(
                "<tr data-user=\"{user}\"><td><input type=\"checkbox\" name=\"user\" value=\"{user}\" \
                 aria-label=\"Select {user}\"></td><td data-label=\"Who\">{}</td>\
                 <td data-label=\"Why\">{}</td><td data-label=\"Answers\">{}</td><td data-label=\"Source\">{}</td>\
                 <td data-label=\"Received\">{}</td><td class=\"actions\">\
                 <button type=\"button\" data-action=\"approve\" data-user=\"{user}\">Approve</button> \
                 <button type=\"button\" class=\"danger\" data-action=\"reject\" data-user=\"{user}\">Reject</button></td></tr>",
                who(k),
                why(k),
                answers(k),
                text(&k["source"]),
                when(&k["received_at"]),
            ));
        }
        body.push_str(
            "</tbody></table></div><p class=\"bulk-actions\"><label><input type=\"checkbox\" \
             id=\"select-all\"> Select all</label> <label>Reason (kept with the knock) \
             <input name=\"reason\" id=\"reason\" maxlength=\"300\"></label> \
             <button type=\"button\" data-bulk=\"approve\">Approve selected</button> \
             <button type=\"button\" class=\"danger\" data-bulk=\"reject\">Reject selected</button></p></form>",
        );
    }
    let reviews = v["members_to_review"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    body.push_str("<h2>Members to review</h2>");
    if reviews.is_empty() {
        body.push_str(&empty("The block-list scan reported no member."));
    } else {
        body.push_str(
            "<div class=\"table\"><table><caption>Members the block-list scan found with weak \
             evidence: keep them or remove them</caption><thead><tr><th scope=\"col\">Who</th>\
             <th scope=\"col\">Why</th><th scope=\"col\">Seen</th><th scope=\"col\">Decide</th>\
             </tr></thead><tbody>",
        );
        for r in &reviews {
            let user = text(&r["user_id"]);
            body.push_str(&format!(
                "<tr data-user=\"{user}\"><td data-label=\"Who\"><code>{user}</code></td>\
                 <td data-label=\"Why\">{}</td><td data-label=\"Seen\">{}</td><td class=\"actions\">\
                 <button type=\"button\" data-action=\"approve\" data-user=\"{user}\">Keep</button> \
                 <button type=\"button\" class=\"danger\" data-action=\"reject\" data-user=\"{user}\">Remove</button></td></tr>",
                text(&r["why"]),
                when(&r["seen_at"]),
            ));
        }
        body.push_str("</tbody></table></div>");
    }
    layout(ctx, "/admin/", "Held", &body)
}

/// Recent knocks: what Knock decided and why, newest first; filtered by verdict or Matrix ID.
pub fn knocks(ctx: &Ctx, v: &Value, verdict: Option<&str>, user_id: Option<&str>) -> String {
    let mut options = String::from("<option value=\"\">any verdict</option>");
    for st in Status::ALL {
        let name = st.as_str();
        let sel = if verdict == Some(name) {
            " selected"
        } else {
            ""
        };
        options.push_str(&format!("<option{sel}>{name}</option>"));
    }
    let room_field = room_field(ctx);
    let mut body = format!(
        "<form method=\"get\" action=\"/admin/knocks\" class=\"filters\" role=\"search\">{room_field}\
         <label>Verdict <select name=\"verdict\">{options}</select></label> \
         <label>Matrix ID <input type=\"search\" name=\"user_id\" value=\"{}\" \
         placeholder=\"@someone:example.org\"></label> <button>Filter</button></form>",
        escape(user_id.unwrap_or(""))
    );
    if let Some(err) = s(&v["error"]) {
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(err)
        ));
    }
    let knocks = v["knocks"].as_array().cloned().unwrap_or_default();
    if knocks.is_empty() {
        body.push_str(&empty("No knock matches."));
    } else {
        body.push_str(
            "<div class=\"table\"><table><caption>Knocks, newest first</caption><thead><tr>\
             <th scope=\"col\">#</th><th scope=\"col\">Who</th><th scope=\"col\">Verdict</th>\
             <th scope=\"col\">Rule and reason</th><th scope=\"col\">Source</th>\
             <th scope=\"col\">Received</th><th scope=\"col\">Updated</th></tr></thead><tbody>",
        );
        for k in &knocks {
            let verdict = s(&k["verdict"]).unwrap_or("");
            let mut why = why(k);
            if verdict == "blocked" {
                let entry = [&k["reason"], &k["note"]]
                    .into_iter()
                    .find_map(|f| f.as_str().and_then(matched_entry));
                if let Some(entry) = entry {
                    why.push_str(&format!(
                        " <a href=\"{}\">the entry</a>",
                        escape(&link("/admin/blocklist", ctx.room, &[("q", entry)]))
                    ));
                }
            }
            body.push_str(&format!(
                "<tr><td data-label=\"#\">{}</td><td data-label=\"Who\">{}</td>\
                 <td data-label=\"Verdict\"><span class=\"verdict v-{}\">{}</span></td>\
                 <td data-label=\"Why\">{why}</td><td data-label=\"Source\">{}</td>\
                 <td data-label=\"Received\">{}</td><td data-label=\"Updated\">{}</td></tr>",
                text(&k["id"]),
                who(k),
                escape(verdict),
                escape(verdict),
                text(&k["source"]),
                when(&k["received_at"]),
                when(&k["updated_at"]),
            ));
        }
        body.push_str("</tbody></table></div>");
        if let Some(next) = v["next_before"].as_i64() {
            let next = next.to_string();
            let mut extra = vec![("before", next.as_str())];
            if let Some(vd) = verdict {
                extra.push(("verdict", vd));
            }
            if let Some(u) = user_id {
                extra.push(("user_id", u));
            }
            body.push_str(&format!(
                "<p><a href=\"{}\">Older knocks</a></p>",
                escape(&link("/admin/knocks", ctx.room, &extra))
            ));
        }
    }
    layout(ctx, "/admin/knocks", "Recent knocks", &body)
}

/// The block-list: search, add (with a live preview), remove, import, export.
pub fn blocklist(ctx: &Ctx, v: &Value, q: Option<&str>) -> String {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    let needle = q.map(str::to_lowercase).filter(|n| !n.is_empty());
    let shown: Vec<&Value> = entries
        .iter()
        .filter(|e| match &needle {
            None => true,
            Some(n) => [&e["pattern"], &e["reason"]]
                .iter()
                .any(|f| f.as_str().is_some_and(|t| t.to_lowercase().contains(n))),
        })
        .collect();
    let room_field = room_field(ctx);
    let mut body = format!(
        "<section aria-labelledby=\"add-h\"><h2 id=\"add-h\">Add an entry</h2>\
         <form id=\"add-entry\" class=\"stack\">\
         <p><label for=\"pattern\">Matrix ID, glob (<code>@*:spam.example</code>) or display name</label>\
         <input id=\"pattern\" name=\"pattern\" required autocomplete=\"off\" spellcheck=\"false\"></p>\
         <p class=\"row\"><label>Kind <select name=\"kind\" id=\"kind\">\
         <option value=\"id\">Matrix ID or glob</option><option value=\"display_name\">Display name</option>\
         </select></label> <label>Reach <select name=\"reach\" id=\"reach\">\
         <option value=\"\">default for the name</option><option value=\"exact\">exact</option>\
         <option value=\"family\">family</option><option value=\"fuzzy\">fuzzy</option></select></label></p>\
         <p><label for=\"entry-reason\">Reason</label><input id=\"entry-reason\" name=\"reason\" maxlength=\"500\"></p>\
         <p><button type=\"submit\" class=\"danger\">Block</button></p></form>\
         <div id=\"preview\" aria-live=\"polite\"><p class=\"note\">Type an entry to see whom it would \
         catch among recent knocks and current members.</p></div></section>\
         <section aria-labelledby=\"list-h\"><h2 id=\"list-h\">Entries ({} of {})</h2>\
         <form method=\"get\" action=\"/admin/blocklist\" class=\"filters\" role=\"search\">{room_field}\
         <label>Search <input type=\"search\" name=\"q\" value=\"{}\"></label> <button>Search</button></form>",
        shown.len(),
        entries.len(),
        escape(q.unwrap_or("")),
    );
    if shown.is_empty() {
        body.push_str(&empty("No entry matches."));
    } else {
        body.push_str(
            "<div class=\"table\"><table><caption>Block-list entries</caption><thead><tr>\
             <th scope=\"col\">Entry</th><th scope=\"col\">Kind</th><th scope=\"col\">Reach</th>\
             <th scope=\"col\">Reason</th><th scope=\"col\">Added</th><th scope=\"col\">Remove</th>\
             </tr></thead><tbody>",
        );
        for e in shown {
            let pattern = text(&e["pattern"]);
            body.push_str(&format!(
                "<tr><td data-label=\"Entry\"><code>{pattern}</code></td><td data-label=\"Kind\">{}</td>\
                 <td data-label=\"Reach\">{}</td><td data-label=\"Reason\">{}</td>\
                 <td data-label=\"Added\">{}</td><td class=\"actions\"><button type=\"button\" \
                 data-action=\"unblock\" data-pattern=\"{pattern}\">Remove</button></td></tr>",
                text(&e["kind"]).replace('_', " "),
                s(&e["reach"]).map_or_else(|| "default".to_owned(), escape),
                text(&e["reason"]),
                when(&e["added_at"]),
            ));
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str(
        "</section><section aria-labelledby=\"io-h\"><h2 id=\"io-h\">Import and export</h2>\
         <form id=\"import\" class=\"row\"><label>A text (one entry a line) or JSON file \
         <input type=\"file\" name=\"file\" id=\"import-file\" accept=\".txt,.json,text/plain,application/json\" required></label> \
         <button type=\"submit\">Import</button></form>\
         <p><a href=\"/blocklist?format=txt\" download=\"blocklist.txt\">Export as text</a> · \
         <a href=\"/blocklist\" download=\"blocklist.json\">Export as JSON</a></p></section>",
    );
    layout(ctx, "/admin/blocklist", "Block-list", &body)
}

/// Invites not yet accepted, with their age and reminder state.
pub fn invites(ctx: &Ctx, v: &Value) -> String {
    let pending = v["pending"].as_array().cloned().unwrap_or_default();
    let mut body = String::new();
    if pending.is_empty() {
        body.push_str(&empty("No invite is waiting."));
    } else {
        body.push_str(
            "<div class=\"table\"><table><caption>Invites not yet accepted (and knocks on their \
             way to one)</caption><thead><tr><th scope=\"col\">Who</th><th scope=\"col\">State</th>\
             <th scope=\"col\">Knocked</th><th scope=\"col\">Invited</th><th scope=\"col\">Reminded</th>\
             <th scope=\"col\">Last error</th><th scope=\"col\">Rescind</th></tr></thead><tbody>",
        );
        for p in &pending {
            let user = text(&p["user_id"]);
            let invited = if p["invited_seconds_ago"].is_null() {
                "not yet".to_owned()
            } else {
                format!("{} ago", age(&p["invited_seconds_ago"]))
            };
            body.push_str(&format!(
                "<tr data-user=\"{user}\"><td data-label=\"Who\">{}</td><td data-label=\"State\">{}</td>\
                 <td data-label=\"Knocked\">{} ago</td><td data-label=\"Invited\">{invited}</td>\
                 <td data-label=\"Reminded\">{}</td><td data-label=\"Last error\">{}</td>\
                 <td class=\"actions\"><button type=\"button\" class=\"danger\" data-action=\"rescind\" \
                 data-user=\"{user}\">Rescind</button></td></tr>",
                who(p),
                text(&p["state"]),
                age(&p["age_seconds"]),
                if p["reminded"] == true { "yes" } else { "no" },
                text(&p["last_error"]),
            ));
        }
        body.push_str("</tbody></table></div>");
    }
    layout(ctx, "/admin/invites", "Invites", &body)
}

/// Health: the bot's login, each room's queue and last cron run, and configuration problems.
/// `health` is `GET /`'s answer, `rooms` `GET /rooms`'s, `whoami` `GET /whoami`'s.
pub fn health(ctx: &Ctx, health: &Value, rooms: &Value, whoami: &Value) -> String {
    let status = s(&health["status"]).unwrap_or("unknown");
    let mut body = format!(
        "<dl class=\"facts\"><dt>Status</dt><dd><span class=\"verdict v-{0}\">{0}</span>{1}</dd>\
         <dt>Webhook</dt><dd>{2}</dd><dt>Bot</dt><dd>{3} ({4} mode)</dd>\
         <dt>Login</dt><dd>{5}</dd></dl>",
        escape(status),
        s(&health["reason"])
            .map(|r| format!(" — {}", escape(r)))
            .unwrap_or_default(),
        text(&health["webhook"]),
        s(&whoami["user_id"]).map_or_else(
            || "not known yet".to_owned(),
            |u| format!("<code>{}</code>", escape(u))
        ),
        text(&whoami["mode"]),
        if whoami["login_needed"].is_null() || whoami["login_needed"] == false {
            "logged in".to_owned()
        } else {
            format!("needed: {}", text(&whoami["login_needed"]))
        },
    );
    let mut problems: Vec<String> = Vec::new();
    for key in ["missing", "invalid", "fix", "warnings"] {
        for p in health[key].as_array().into_iter().flatten() {
            problems.push(format!("{key}: {}", p.as_str().unwrap_or_default()));
        }
    }
    if let Some(m) = health.get("management") {
        if m["status"] != "ok" {
            problems.push(format!("management room: {m}"));
        }
    }
    body.push_str("<h2>Configuration problems</h2>");
    if problems.is_empty() {
        body.push_str(&empty("None."));
    } else {
        body.push_str("<ul class=\"problems\">");
        for p in problems {
            body.push_str(&format!("<li>{}</li>", escape(&p)));
        }
        body.push_str("</ul>");
    }
    body.push_str(
        "<h2>Rooms</h2><div class=\"table\"><table><caption>Each room's queue and background \
         tasks</caption><thead><tr><th scope=\"col\">Room</th><th scope=\"col\">Queued</th>\
         <th scope=\"col\">Held</th><th scope=\"col\">Invites waiting</th>\
         <th scope=\"col\">Last invite check</th><th scope=\"col\">Last block-list scan</th>\
         <th scope=\"col\">Last cron run</th></tr></thead><tbody>",
    );
    for r in rooms["rooms"].as_array().into_iter().flatten() {
        let st = &r["status"];
        let last = &st["last_run"];
        let run = if last.is_null() {
            "never".to_owned()
        } else {
            format!(
                "{}: {} ({} actions, {} calls)",
                when(&last["at"]),
                if last["ran"] == true {
                    "ran".to_owned()
                } else {
                    format!("skipped, {}", text(&last["why"]))
                },
                text(&last["actions"]),
                text(&last["calls"]),
            )
        };
        let error = s(&st["error"])
            .map(|e| format!(" <span class=\"error\">{}</span>", escape(e)))
            .unwrap_or_default();
        body.push_str(&format!(
            "<tr><td data-label=\"Room\">{}{error}</td><td data-label=\"Queued\">{}</td>\
             <td data-label=\"Held\">{}</td><td data-label=\"Invites\">{}</td>\
             <td data-label=\"Invite check\">{}</td><td data-label=\"Scan\">{}</td>\
             <td data-label=\"Last run\">{run}</td></tr>",
            text(&r["room"]),
            text(&st["queued"]),
            text(&st["held"]),
            text(&st["pending_invites"]),
            when(&st["last_invite_check"]),
            when(&st["last_blocklist_scan"]),
        ));
    }
    body.push_str("</tbody></table></div>");
    layout(ctx, "/admin/health", "Health", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Ctx<'static> {
        Ctx {
            room: None,
            rooms: &[],
            csrf: "tok\"en",
            now: 0,
        }
    }

    const HOSTILE: &str = "<script>alert(1)</script>\"'&";

    fn assert_escaped(html: &str) {
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"),
            "{html}"
        );
    }

    #[test]
    fn a_held_knock_shows_the_forms_answers_escaped() {
        let k = json!({"id": 3, "user_id": "@a:b", "verdict": "held", "received_at": 1,
                       "answers": [{"question": "Why join?", "answer": HOSTILE}]});
        let html = held(&ctx(), &json!({"held": [k]}));
        assert!(html.contains("<dt>Why join?</dt>"), "{html}");
        assert_escaped(&html);
    }

    #[test]
    fn every_view_escapes_what_comes_from_outside() {
        let k = json!({"id": 3, "user_id": HOSTILE, "display_name": HOSTILE, "note": HOSTILE,
                       "reason": HOSTILE, "source": HOSTILE, "verdict": "held", "received_at": 1});
        assert_escaped(&held(
            &ctx(),
            &json!({"held": [k], "members_to_review":
            [{"user_id": HOSTILE, "why": HOSTILE, "seen_at": 1}]}),
        ));
        assert_escaped(&knocks(
            &ctx(),
            &json!({"knocks": [k]}),
            None,
            Some(HOSTILE),
        ));
        assert_escaped(&blocklist(
            &ctx(),
            &json!({"entries": [{"pattern": HOSTILE, "kind": "display_name", "reason": HOSTILE}]}),
            Some(HOSTILE),
        ));
        assert_escaped(&invites(
            &ctx(),
            &json!({"pending": [{"user_id": HOSTILE,
            "display_name": HOSTILE, "state": HOSTILE, "last_error": HOSTILE}]}),
        ));
        assert_escaped(&health(
            &ctx(),
            &json!({"status": "running", "warnings": [HOSTILE]}),
            &json!({"rooms": [{"room": HOSTILE, "status": {"last_run": {"at": 1, "why": HOSTILE}}}]}),
            &json!({"user_id": HOSTILE}),
        ));
        assert_escaped(&problem("x", HOSTILE));
        assert_escaped(&login(Some(HOSTILE)));
        // The CSRF token in the page is escaped too.
        assert!(held(&ctx(), &json!({})).contains("content=\"tok&quot;en\""));
    }

    #[test]
    fn a_blocked_verdict_links_to_the_entry_that_matched() {
        let note = "matches blocked @*:spam.example (glob)";
        assert_eq!(matched_entry(note), Some("@*:spam.example"));
        assert_eq!(
            matched_entry("x matches blocked @matthew41:localhost (family: both read as matthew)"),
            Some("@matthew41:localhost")
        );
        assert_eq!(matched_entry("honeypot field filled"), None);
        let html = knocks(
            &ctx(),
            &json!({"knocks": [{"id": 1, "user_id": "@a:spam.example", "verdict": "blocked", "note": note}]}),
            Some("blocked"),
            None,
        );
        assert!(
            html.contains("href=\"/admin/blocklist?q=%40*%3Aspam.example\""),
            "{html}"
        );
        assert!(html.contains("<option selected>blocked</option>"));
        // A held knock names its rule but links nowhere.
        let html = knocks(
            &ctx(),
            &json!({"knocks": [{"id": 1, "user_id": "@a:b", "verdict": "held", "note": note}]}),
            None,
            None,
        );
        assert!(!html.contains("the entry</a>"));
    }

    #[test]
    fn the_block_list_search_filters_by_pattern_and_reason() {
        let v = json!({"entries": [{"pattern": "@spam:evil.example", "kind": "user_id"},
                                    {"pattern": "@other:x", "kind": "user_id", "reason": "Evil twin"}]});
        let all = blocklist(&ctx(), &v, None);
        assert!(all.contains("Entries (2 of 2)"));
        let some = blocklist(&ctx(), &v, Some("EVIL"));
        assert!(some.contains("Entries (2 of 2)"));
        let one = blocklist(&ctx(), &v, Some("twin"));
        assert!(
            one.contains("Entries (1 of 2)")
                && one.contains("@other:x")
                && !one.contains("@spam:evil")
        );
    }

    #[test]
    fn several_rooms_get_a_room_choice_and_links_keep_the_room() {
        let rooms = ["default".to_owned(), "team & co".to_owned()];
        let c = Ctx {
            room: Some("team & co"),
            rooms: &rooms,
            csrf: "t",
            now: 0,
        };
        let html = invites(&c, &json!({"pending": []}));
        assert!(
            html.contains("<option selected>team &amp; co</option>"),
            "{html}"
        );
        assert!(
            html.contains("href=\"/admin/knocks?room=team+%26+co\""),
            "{html}"
        );
        assert!(html.contains("data-room=\"team &amp; co\""));
        // One room: no choice shown.
        assert!(!invites(&ctx(), &json!({})).contains("name=\"room\""));
    }

    #[test]
    fn times_and_ages_read_as_people_write_them() {
        assert_eq!(
            when(&json!(1_764_636_300_000u64)),
            "<time datetime=\"2025-12-02T00:45:00Z\">2025-12-02 00:45 UTC</time>"
        );
        assert_eq!(when(&json!(null)), "—");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(age(&json!(30)), "30 s");
        assert_eq!(age(&json!(600)), "10 min");
        assert_eq!(age(&json!(7_200)), "2 h");
        assert_eq!(age(&json!(3 * 86_400)), "3 d");
    }

    #[test]
    fn the_current_view_is_marked_for_assistive_technology() {
        let html = knocks(&ctx(), &json!({}), None, None);
        assert!(html.contains("<a href=\"/admin/knocks\" aria-current=\"page\">Recent knocks</a>"));
        assert!(html.contains("<html lang=\"en\">") && html.contains("<main id=\"main\">"));
        assert!(html.contains("name=\"csrf\""));
    }
}

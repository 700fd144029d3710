//! What Knock posts to the management room about knocks: `m.notice` events with a plain body and
//! an HTML body.
//!
//! Decides: the text of a held knock's notice (who, their display name, where it came from, the
//! form's answers, the verdict and its rule, the one-tap actions) and of a join wave's digest
//! (one notice listing every held knock, edited in place as it grows). Everything from outside
//! (display names, answers, reasons) is HTML-escaped, cut to a safe length, and scrubbed of
//! room IDs and aliases; the public room is named by its alias only. Never does: IO.

use crate::domain::outcome::scrub;

/// Longest display name, answer, or reason shown (characters).
pub const MAX_FIELD_CHARS: usize = 200;
/// Most form answers shown on one notice.
pub const MAX_ANSWERS: usize = 10;
/// Most knocks a digest lists by name (the rest are counted).
pub const MAX_DIGEST_LINES: usize = 30;

/// A knock as a notice shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeKnock {
    pub user_id: String,
    pub display_name: Option<String>,
    /// `tally`, `typeform`, `html_form`, `native`, …
    pub source: String,
    /// The form's answers other than the Matrix ID and the honeypots: (label, value).
    pub answers: Vec<(String, String)>,
    /// Why it is held: the verdict's rule, the join wave, `KNOCK_POLICY=manual`.
    pub reason: Option<String>,
}

/// A notice's two bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub body: String,
    pub html: String,
}

/// Escapes text for an HTML body (notices, and the worker's small HTML pages).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Outside text made safe to show: scrubbed of room IDs and aliases, control characters
/// dropped, cut to [`MAX_FIELD_CHARS`].
pub fn clean(s: &str) -> String {
    let flat: String = scrub(s)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= MAX_FIELD_CHARS {
        flat.to_owned()
    } else {
        let cut: String = flat.chars().take(MAX_FIELD_CHARS - 1).collect();
        format!("{cut}…")
    }
}

fn source_label(source: &str) -> String {
    match source {
        "native" => "a knock in Matrix".to_owned(),
        "space" => "the space's form".to_owned(),
        other => format!("the {} form", clean(other)),
    }
}

/// The notice for one held knock in `room` (its alias).
pub fn held(k: &NoticeKnock, room: &str) -> Notice {
    let who = clean(&k.user_id);
    let name = k.display_name.as_deref().map(clean);
    let from = source_label(&k.source);
    let room = clean(room);
    let reason = k.reason.as_deref().map(clean);
    let answers: Vec<(String, String)> = k
        .answers
        .iter()
        .take(MAX_ANSWERS)
        .map(|(q, a)| (clean(q), clean(a)))
        .collect();

    let mut body = format!("Held for a moderator in {room}: {who}");
    if let Some(n) = &name {
        body.push_str(&format!(" ({n})"));
    }
    body.push_str(&format!(", from {from}."));
    if let Some(r) = &reason {
        body.push_str(&format!("\nWhy: {r}"));
    }
    for (q, a) in &answers {
        body.push_str(&format!("\n{q}: {a}"));
    }
    body.push_str("\nReact ✅ to approve, ❌ to reject, 🔨 to block.");

    let mut html = format!(
        "<p><b>Held for a moderator</b> in {}: <code>{}</code>",
        escape(&room),
        escape(&who)
    );
    if let Some(n) = &name {
        html.push_str(&format!(" ({})", escape(n)));
    }
    html.push_str(&format!(", from {}.</p>", escape(&from)));
    if let Some(r) = &reason {
        html.push_str(&format!("<p>Why: {}</p>", escape(r)));
    }
    if !answers.is_empty() {
        html.push_str("<ul>");
        for (q, a) in &answers {
            html.push_str(&format!("<li>{}: {}</li>", escape(q), escape(a)));
        }
        html.push_str("</ul>");
    }
    html.push_str("<p>React ✅ to approve, ❌ to reject, 🔨 to block.</p>");
    Notice { body, html }
}

/// The notice for a knock Knock decided without a moderator (`MANAGEMENT_NOTIFY=all`): accepted
/// (`queued`, `invited`) or refused (`blocked`, `spam`, …), with the rule.
pub fn decided(k: &NoticeKnock, room: &str, verdict: &str) -> Notice {
    let who = clean(&k.user_id);
    let from = source_label(&k.source);
    let room = clean(room);
    let verdict = clean(verdict);
    let accepted = matches!(
        verdict.as_str(),
        "queued" | "invited" | "joined" | "welcomed"
    );
    let head = if accepted { "Accepted" } else { "Refused" };
    let mut body = format!("{head} in {room}: {who}, from {from} ({verdict}).");
    let mut html = format!(
        "<p><b>{head}</b> in {}: <code>{}</code>, from {} ({}).</p>",
        escape(&room),
        escape(&who),
        escape(&from),
        escape(&verdict)
    );
    if let Some(r) = k.reason.as_deref().map(clean).filter(|r| !r.is_empty()) {
        body.push_str(&format!("\nWhy: {r}"));
        html.push_str(&format!("<p>Why: {}</p>", escape(&r)));
    }
    Notice { body, html }
}

/// The digest of a join wave in `room`: the knocks it holds that still wait (the first
/// [`MAX_DIGEST_LINES`] by name) out of the `total` it held, edited in place as the wave grows
/// and as moderators decide.
pub fn digest(knocks: &[NoticeKnock], total: u64, room: &str) -> Notice {
    let room = clean(room);
    let n = knocks.len();
    let decided = total.saturating_sub(n as u64);
    let plural = if n == 1 { "" } else { "s" };
    let settled = if decided > 0 {
        format!(" ({decided} of {total} decided already)")
    } else {
        String::new()
    };
    let mut body = format!("Join wave in {room}: {n} knock{plural} held for a moderator{settled}.");
    let mut html = format!(
        "<p><b>Join wave</b> in {}: {n} knock{plural} held for a moderator{}.</p><ul>",
        escape(&room),
        escape(&settled)
    );
    for k in knocks.iter().take(MAX_DIGEST_LINES) {
        let who = clean(&k.user_id);
        let from = source_label(&k.source);
        body.push_str(&format!("\n- {who}, from {from}"));
        html.push_str(&format!(
            "<li><code>{}</code>, from {}</li>",
            escape(&who),
            escape(&from)
        ));
    }
    html.push_str("</ul>");
    if n > MAX_DIGEST_LINES {
        let more = n - MAX_DIGEST_LINES;
        body.push_str(&format!("\n… and {more} more"));
        html.push_str(&format!("<p>… and {more} more</p>"));
    }
    if n == 0 {
        return Notice { body, html };
    }
    let confirm = if super::commands::needs_confirmation(n) {
        " (more than 10: Knock asks you to confirm first)"
    } else {
        ""
    };
    body.push_str(&format!(
        "\nReact ✅ to approve all, ❌ to reject all{confirm}."
    ));
    html.push_str(&format!(
        "<p>React ✅ to approve all, ❌ to reject all{}.</p>",
        escape(confirm)
    ));
    Notice { body, html }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knock(user: &str) -> NoticeKnock {
        NoticeKnock {
            user_id: user.into(),
            display_name: Some("<script>alert(1)</script>".into()),
            source: "tally".into(),
            answers: vec![
                (
                    "Why do you want to join?".into(),
                    "I like <b>Rust</b> & Matrix".into(),
                ),
                ("Long".into(), "x".repeat(500)),
            ],
            reason: Some(
                "@matthew70:x matches blocked @matthew41:x; held for a moderator, not blocked"
                    .into(),
            ),
        }
    }

    #[test]
    fn a_held_notice_shows_who_why_and_the_answers_escaped() {
        let n = held(&knock("@matthew70:x"), "lobby");
        assert!(
            n.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{}",
            n.html
        );
        assert!(!n.html.contains("<script>"), "{}", n.html);
        assert!(
            n.html
                .contains("I like &lt;b&gt;Rust&lt;/b&gt; &amp; Matrix"),
            "{}",
            n.html
        );
        assert!(n
            .body
            .contains("Why: @matthew70:x matches blocked @matthew41:x"));
        assert!(n.body.contains("from the tally form"));
        assert!(n.body.contains("React ✅ to approve"));
        // A long answer is cut.
        let long = n.body.lines().find(|l| l.starts_with("Long: ")).unwrap();
        assert!(
            long.chars().count() <= "Long: ".len() + MAX_FIELD_CHARS,
            "{long}"
        );
        assert!(long.ends_with('…'));
    }

    #[test]
    fn a_notice_never_shows_a_room_id_even_when_an_outsider_writes_one() {
        let mut k = knock("@a:x");
        k.answers = vec![(
            "Room".into(),
            "please add me to !secretroom:example.org".into(),
        )];
        k.display_name = Some("#private:example.org".into());
        let n = held(&k, "lobby");
        for text in [&n.body, &n.html] {
            assert!(!text.contains("!secretroom:example.org"), "{text}");
            assert!(!text.contains("#private:example.org"), "{text}");
        }
    }

    #[test]
    fn a_digest_lists_the_wave_and_asks_for_confirmation_above_ten() {
        let few: Vec<NoticeKnock> = (0..3).map(|i| knock(&format!("@u{i}:x"))).collect();
        let d = digest(&few, 3, "lobby");
        assert!(d.body.starts_with("Join wave in lobby: 3 knocks held"));
        assert!(!d.body.contains("confirm"));
        let many: Vec<NoticeKnock> = (0..40).map(|i| knock(&format!("@u{i}:x"))).collect();
        let d = digest(&many, 40, "lobby");
        assert!(d.body.contains("… and 10 more"), "{}", d.body);
        assert!(d.body.contains("confirm first"), "{}", d.body);
        assert_eq!(d.html.matches("<li>").count(), MAX_DIGEST_LINES);
    }

    #[test]
    fn a_digest_counts_what_moderators_decided_and_offers_no_tap_when_nothing_waits() {
        let two: Vec<NoticeKnock> = (0..2).map(|i| knock(&format!("@u{i}:x"))).collect();
        let d = digest(&two, 5, "lobby");
        assert!(
            d.body.starts_with(
                "Join wave in lobby: 2 knocks held for a moderator (3 of 5 decided already)."
            ),
            "{}",
            d.body
        );
        let d = digest(&[], 5, "lobby");
        assert!(!d.body.contains("React"), "{}", d.body);
    }
}

//! Who reads the reply to a form post: a person's browser, or a program.
//!
//! Decides, from the request headers alone (never the body's content type: an Apps Script posts
//! urlencoded, as a browser does):
//! 1. `Sec-Fetch-Mode: navigate` is a browser submitting a form: a person, who gets a page.
//! 2. Any other `Sec-Fetch-Mode` (`cors`, `no-cors`, `same-origin`) is a page's script, which
//!    reads JSON.
//! 3. An `Accept` that prefers `text/html` (or XHTML) to JSON is a browser: a person.
//! 4. An `Origin` header without `Sec-Fetch-*` is an older browser posting a form: a person.
//! 5. Anything else (webhooks: no `Sec-Fetch-Mode`, no `Origin`, `Accept: */*` or none) is a
//!    program, which gets JSON.
//!
//! Never does: read any header itself; the edge passes them in.

/// How the reply is dressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// A program (a webhook sender, a page's script): JSON.
    Webhook,
    /// A person's browser: a small page, or a redirect.
    Person,
}

/// Decides the audience from the `Accept`, `Sec-Fetch-Mode` and `Origin` headers.
pub fn audience(
    accept: Option<&str>,
    sec_fetch_mode: Option<&str>,
    origin: Option<&str>,
) -> Audience {
    match sec_fetch_mode.map(str::trim).filter(|m| !m.is_empty()) {
        Some(mode) if mode.eq_ignore_ascii_case("navigate") => return Audience::Person,
        Some(_) => return Audience::Webhook,
        None => {}
    }
    if accept.is_some_and(prefers_html) {
        return Audience::Person;
    }
    if origin.is_some_and(|o| !o.trim().is_empty()) {
        return Audience::Person;
    }
    Audience::Webhook
}

/// True when the media ranges name `text/html` (or XHTML) with a weight above zero and above
/// JSON's. A wildcard alone (`*/*`) prefers nothing.
fn prefers_html(accept: &str) -> bool {
    let (mut html, mut json) = (None::<f32>, None::<f32>);
    for range in accept.split(',') {
        let mut params = range.split(';');
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .filter(|q| q.is_finite())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "text/html" | "application/xhtml+xml" => &mut html,
            "application/json" => &mut json,
            m if m.starts_with("application/") && m.ends_with("+json") => &mut json,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    match html {
        Some(h) if h > 0.0 => json.is_none_or(|j| h > j),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a current browser sends when a person submits a form.
    const BROWSER_ACCEPT: &str =
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

    #[test]
    fn an_apps_script_post_is_a_webhook() {
        assert_eq!(audience(Some("*/*"), None, None), Audience::Webhook);
        assert_eq!(audience(None, None, None), Audience::Webhook);
    }

    #[test]
    fn a_webhook_asking_for_json_is_a_webhook() {
        assert_eq!(
            audience(Some("application/json"), None, None),
            Audience::Webhook
        );
        assert_eq!(
            audience(Some("application/json, text/html;q=0.5"), None, None),
            Audience::Webhook
        );
    }

    #[test]
    fn a_navigating_browser_is_a_person() {
        assert_eq!(
            audience(
                Some(BROWSER_ACCEPT),
                Some("navigate"),
                Some("https://example.org")
            ),
            Audience::Person
        );
        assert_eq!(audience(None, Some("Navigate"), None), Audience::Person);
    }

    #[test]
    fn a_page_script_is_a_webhook_even_with_an_origin() {
        for mode in ["cors", "no-cors", "same-origin"] {
            assert_eq!(
                audience(Some("*/*"), Some(mode), Some("https://example.org")),
                Audience::Webhook,
                "{mode}"
            );
        }
    }

    #[test]
    fn accept_preferring_html_is_a_person() {
        assert_eq!(audience(Some(BROWSER_ACCEPT), None, None), Audience::Person);
        assert_eq!(audience(Some("text/html"), None, None), Audience::Person);
        assert_eq!(
            audience(Some("application/json;q=0.4, text/html"), None, None),
            Audience::Person
        );
        assert_eq!(
            audience(Some("text/html;q=0"), None, None),
            Audience::Webhook,
            "a weight of zero refuses HTML"
        );
    }

    #[test]
    fn an_origin_without_fetch_metadata_is_an_older_browser() {
        assert_eq!(
            audience(Some("*/*"), None, Some("https://example.org")),
            Audience::Person
        );
        assert_eq!(audience(None, None, Some("null")), Audience::Person);
        assert_eq!(audience(None, None, Some(" ")), Audience::Webhook);
    }

    #[test]
    fn odd_accept_headers_do_not_confuse_it() {
        for odd in [
            "",
            ",,,",
            "text/html;q=abc",
            "text/html;q=NaN, application/json",
            ";;",
        ] {
            let _ = audience(Some(odd), None, None);
        }
        assert_eq!(
            audience(Some("text/html;q=abc"), None, None),
            Audience::Person
        );
    }
}

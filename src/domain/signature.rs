//! Webhook authentication: which configured secret, if any, a delivery proves.
//!
//! Decides: whether the raw body and headers prove one of the configured secrets (Tally,
//! Typeform, Formspree signatures, or Knock's shared secret). Never does: any parsing of the
//! payload itself; signatures are always checked over the raw bytes as received.
//!
//! All comparisons of secret material run in constant time (`subtle`, and `hmac`'s own
//! `verify_slice`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Formspree's replay window: a signature older or newer than this is refused.
pub const FORMSPREE_TOLERANCE_SECS: u64 = 300;

/// The secrets Knock may be configured with. Any `None` is simply not checked.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Secrets {
    pub tally: Option<String>,
    pub typeform: Option<String>,
    pub formspree: Option<String>,
    pub shared: Option<String>,
    /// `TURNSTILE_SECRET_KEY`: browser deliveries must pass Cloudflare Turnstile.
    pub turnstile: Option<String>,
}

impl Secrets {
    /// Any check at all is configured (otherwise the webhook is open).
    pub fn any(&self) -> bool {
        self.signing_or_shared() || self.turnstile.is_some()
    }

    fn signing_or_shared(&self) -> bool {
        self.tally.is_some()
            || self.typeform.is_some()
            || self.formspree.is_some()
            || self.shared.is_some()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("tally", &self.tally.is_some())
            .field("typeform", &self.typeform.is_some())
            .field("formspree", &self.formspree.is_some())
            .field("shared", &self.shared.is_some())
            .field("turnstile", &self.turnstile.is_some())
            .finish()
    }
}

/// The authentication-relevant parts of a request, already read from it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    pub tally_signature: Option<&'a str>,
    pub typeform_signature: Option<&'a str>,
    pub formspree_signature: Option<&'a str>,
    /// `X-Knock-Secret` header, or else the `secret` query parameter.
    pub shared_secret: Option<&'a str>,
    /// The shared secret came in the header (a URL's `?secret=` ends up in logs and in a public
    /// form's HTML, so it is no proof where Turnstile is on).
    pub shared_in_header: bool,
}

/// Which proof a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// No secret is configured: the endpoint is open (honeypots and rate limits defend it).
    Open,
    Tally,
    Typeform,
    Formspree,
    SharedSecret,
    /// A valid Cloudflare Turnstile token (checked by the edge after [`Gate::Turnstile`]).
    Turnstile,
}

impl Proof {
    /// A form platform signed the delivery. Such deliveries come from a handful of the
    /// platform's addresses and are retried: the per-address limit is not theirs.
    pub fn is_platform_signature(self) -> bool {
        matches!(self, Proof::Tally | Proof::Typeform | Proof::Formspree)
    }
}

/// What a delivery needs before it may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Proven(Proof),
    /// No platform signature and no shared secret in a header, and Turnstile is on: the body
    /// must carry a valid `cf-turnstile-response`.
    Turnstile,
}

/// [`verify`], with Turnstile: a delivery with a platform signature or the shared secret in a
/// header is checked as always; any other delivery goes to Turnstile when it is configured
/// (a secret in the URL is public on a plain form's page, so it proves nothing there).
pub fn gate(
    secrets: &Secrets,
    presented: &Presented<'_>,
    body: &[u8],
    now_unix_secs: u64,
) -> Result<Gate, AuthError> {
    let signed = presented.tally_signature.is_some()
        || presented.typeform_signature.is_some()
        || presented.formspree_signature.is_some();
    let header_secret = presented.shared_secret.is_some() && presented.shared_in_header;
    if secrets.turnstile.is_some() && !signed && !header_secret {
        return Ok(Gate::Turnstile);
    }
    if !secrets.signing_or_shared() {
        return Ok(Gate::Proven(Proof::Open));
    }
    verify(secrets, presented, body, now_unix_secs).map(Gate::Proven)
}

/// Why a request was refused. The public reply is the same 401 for all of them; the variant is
/// for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Secrets are configured and the request carried no signature or secret at all.
    Missing,
    /// A signature header was present but does not match the body.
    BadSignature,
    /// A signature header was present but not in the platform's format.
    MalformedHeader,
    /// A Formspree signature whose timestamp is outside the replay window.
    Stale,
    /// The shared secret was given but is wrong.
    BadSharedSecret,
}

/// Checks the request against every configured secret. The first configured check whose header
/// is present decides; a request that presents nothing matching a configured secret is refused.
pub fn verify(
    secrets: &Secrets,
    presented: &Presented<'_>,
    body: &[u8],
    now_unix_secs: u64,
) -> Result<Proof, AuthError> {
    if !secrets.signing_or_shared() {
        return Ok(Proof::Open);
    }
    let mut failure = AuthError::Missing;
    if let (Some(secret), Some(header)) = (&secrets.tally, presented.tally_signature) {
        match verify_tally(secret, header, body) {
            Ok(()) => return Ok(Proof::Tally),
            Err(e) => failure = e,
        }
    }
    if let (Some(secret), Some(header)) = (&secrets.typeform, presented.typeform_signature) {
        match verify_typeform(secret, header, body) {
            Ok(()) => return Ok(Proof::Typeform),
            Err(e) => failure = e,
        }
    }
    if let (Some(secret), Some(header)) = (&secrets.formspree, presented.formspree_signature) {
        match verify_formspree(secret, header, body, now_unix_secs) {
            Ok(()) => return Ok(Proof::Formspree),
            Err(e) => failure = e,
        }
    }
    if let (Some(secret), Some(given)) = (&secrets.shared, presented.shared_secret) {
        if constant_time_eq(secret.as_bytes(), given.as_bytes()) {
            return Ok(Proof::SharedSecret);
        }
        failure = AuthError::BadSharedSecret;
    }
    Err(failure)
}

/// `Tally-Signature: base64(HMAC-SHA256(secret, raw body))`.
pub fn verify_tally(secret: &str, header: &str, body: &[u8]) -> Result<(), AuthError> {
    let given = decode_b64(header.trim())?;
    check_mac(secret.as_bytes(), &[body], &given)
}

/// `Typeform-Signature: sha256=base64(HMAC-SHA256(secret, raw body))`.
pub fn verify_typeform(secret: &str, header: &str, body: &[u8]) -> Result<(), AuthError> {
    let encoded = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(AuthError::MalformedHeader)?;
    let given = decode_b64(encoded)?;
    check_mac(secret.as_bytes(), &[body], &given)
}

/// `Formspree-Signature: t=<unix secs>,v1=<hex HMAC-SHA256(secret, "{t}.{raw body}")>`.
pub fn verify_formspree(
    secret: &str,
    header: &str,
    body: &[u8],
    now_unix_secs: u64,
) -> Result<(), AuthError> {
    let parsed = parse_formspree_header(header)?;
    if now_unix_secs.abs_diff(parsed.timestamp) > FORMSPREE_TOLERANCE_SECS {
        return Err(AuthError::Stale);
    }
    let t = parsed.timestamp.to_string();
    let mut last = Err(AuthError::BadSignature);
    for sig in &parsed.signatures {
        last = check_mac(secret.as_bytes(), &[t.as_bytes(), b".", body], sig);
        if last.is_ok() {
            break;
        }
    }
    last
}

/// A parsed `t=...,v1=...` header. Several `v1` values are allowed (secret rotation).
#[derive(Debug, PartialEq, Eq)]
pub struct FormspreeHeader {
    pub timestamp: u64,
    pub signatures: Vec<Vec<u8>>,
}

pub fn parse_formspree_header(header: &str) -> Result<FormspreeHeader, AuthError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(AuthError::MalformedHeader)?;
        match k {
            "t" => {
                if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(AuthError::MalformedHeader);
                }
                timestamp = v.parse().ok();
            }
            "v1" => signatures.push(hex_decode(v).ok_or(AuthError::MalformedHeader)?),
            _ => {}
        }
    }
    match (timestamp, signatures.is_empty()) {
        (Some(timestamp), false) => Ok(FormspreeHeader {
            timestamp,
            signatures,
        }),
        _ => Err(AuthError::MalformedHeader),
    }
}

/// Computes the base64 HMAC-SHA256 a sender would put in `Tally-Signature`. Used by tests and by
/// the sandbox's sample request.
pub fn sign_base64(secret: &str, body: &[u8]) -> String {
    B64.encode(mac(secret.as_bytes(), &[body]).finalize().into_bytes())
}

/// Computes a Formspree-style header for `body` at time `t`.
pub fn sign_formspree(secret: &str, body: &[u8], t: u64) -> String {
    let ts = t.to_string();
    let tag = mac(secret.as_bytes(), &[ts.as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // `ct_eq` on slices of different lengths returns false without leaking where they differ.
    a.ct_eq(b).into()
}

/// HMAC-SHA256 of `parts`, in order, under `key`.
pub(crate) fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m
}

fn check_mac(key: &[u8], parts: &[&[u8]], given: &[u8]) -> Result<(), AuthError> {
    mac(key, parts)
        .verify_slice(given)
        .map_err(|_| AuthError::BadSignature)
}

fn decode_b64(s: &str) -> Result<Vec<u8>, AuthError> {
    if s.is_empty() || s.len() > 128 {
        return Err(AuthError::MalformedHeader);
    }
    B64.decode(s).map_err(|_| AuthError::MalformedHeader)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    // A signature is at most 64 bytes; the `hex` crate rejects anything but hex digit pairs.
    if s.is_empty() || s.len() > 128 {
        return None;
    }
    hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"eventId":"e1","eventType":"FORM_RESPONSE","data":{"fields":[]}}"#;

    fn secrets() -> Secrets {
        Secrets {
            tally: Some("tally-secret".into()),
            typeform: Some("typeform-secret".into()),
            formspree: Some("formspree-secret".into()),
            shared: Some("shared-secret".into()),
            turnstile: None,
        }
    }

    #[test]
    fn with_turnstile_on_only_a_platform_signature_or_a_header_secret_skips_the_check() {
        let on = Secrets {
            turnstile: Some("ts".into()),
            ..secrets()
        };
        let tally = sign_base64("tally-secret", BODY);
        let signed = Presented {
            tally_signature: Some(&tally),
            ..Default::default()
        };
        assert_eq!(gate(&on, &signed, BODY, 0), Ok(Gate::Proven(Proof::Tally)));
        let header = Presented {
            shared_secret: Some("shared-secret"),
            shared_in_header: true,
            ..Default::default()
        };
        assert_eq!(
            gate(&on, &header, BODY, 0),
            Ok(Gate::Proven(Proof::SharedSecret))
        );
        // The secret in a public form's URL proves nothing: the browser must pass Turnstile.
        let query = Presented {
            shared_secret: Some("shared-secret"),
            shared_in_header: false,
            ..Default::default()
        };
        assert_eq!(gate(&on, &query, BODY, 0), Ok(Gate::Turnstile));
        assert_eq!(
            gate(&on, &Presented::default(), BODY, 0),
            Ok(Gate::Turnstile)
        );
        // Turnstile alone is a configured check: the webhook is not open.
        let only = Secrets {
            turnstile: Some("ts".into()),
            ..Default::default()
        };
        assert!(only.any());
        assert_eq!(
            gate(&only, &Presented::default(), BODY, 0),
            Ok(Gate::Turnstile)
        );
        // Without Turnstile, the URL secret works as before.
        assert_eq!(
            gate(&secrets(), &query, BODY, 0),
            Ok(Gate::Proven(Proof::SharedSecret))
        );
        assert_eq!(
            gate(&Secrets::default(), &Presented::default(), BODY, 0),
            Ok(Gate::Proven(Proof::Open))
        );
        assert!(Proof::Typeform.is_platform_signature());
        assert!(!Proof::SharedSecret.is_platform_signature());
        assert!(!Proof::Turnstile.is_platform_signature());
    }

    #[test]
    fn a_known_tally_signature_verifies() {
        // Computed independently: printf '%s' "$BODY" | openssl dgst -sha256 -hmac tally-secret -binary | base64
        let sig = sign_base64("tally-secret", BODY);
        assert_eq!(sig.len(), 44);
        assert_eq!(verify_tally("tally-secret", &sig, BODY), Ok(()));
    }

    #[test]
    fn the_hmac_matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let tag = mac(b"Jefe", &[b"what do ya want for nothing?"])
            .finalize()
            .into_bytes();
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_tampered_body_fails_the_tally_check() {
        let sig = sign_base64("tally-secret", BODY);
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify_tally("tally-secret", &sig, &tampered),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn the_wrong_secret_fails_the_tally_check() {
        let sig = sign_base64("other", BODY);
        assert_eq!(
            verify_tally("tally-secret", &sig, BODY),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn garbage_in_the_signature_header_is_malformed() {
        for h in ["", "not base64!!", &"A".repeat(500)] {
            assert_eq!(
                verify_tally("tally-secret", h, BODY),
                Err(AuthError::MalformedHeader),
                "{h:?}"
            );
        }
    }

    #[test]
    fn typeform_needs_its_sha256_prefix() {
        let sig = sign_base64("typeform-secret", BODY);
        assert_eq!(
            verify_typeform("typeform-secret", &format!("sha256={sig}"), BODY),
            Ok(())
        );
        assert_eq!(
            verify_typeform("typeform-secret", &sig, BODY),
            Err(AuthError::MalformedHeader)
        );
        let mut tampered = BODY.to_vec();
        tampered.push(b' ');
        assert_eq!(
            verify_typeform("typeform-secret", &format!("sha256={sig}"), &tampered),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn formspree_signatures_verify_within_the_replay_window() {
        let now = 1_700_000_000;
        let h = sign_formspree("formspree-secret", BODY, now);
        assert_eq!(
            verify_formspree("formspree-secret", &h, BODY, now + 10),
            Ok(())
        );
        assert_eq!(
            verify_formspree("formspree-secret", &h, BODY, now + 301),
            Err(AuthError::Stale)
        );
        assert_eq!(
            verify_formspree("formspree-secret", &h, b"{}", now),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn formspree_headers_are_parsed_strictly() {
        assert!(parse_formspree_header("t=1,v1=00ff").is_ok());
        assert_eq!(
            parse_formspree_header("t=1,v1=00ff,v1=0a")
                .unwrap()
                .signatures,
            vec![vec![0, 255], vec![10]]
        );
        for bad in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,v1=0",
            "t=1,v1=zz",
            "t1v1",
            "t=-1,v1=00",
        ] {
            assert_eq!(
                parse_formspree_header(bad),
                Err(AuthError::MalformedHeader),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_formspree_v1_value_with_plus_signs_is_not_hex() {
        // "+a+b" used to decode to [0x0a, 0x0b]: `u8::from_str_radix` accepts a leading '+'.
        for bad in ["t=1,v1=+a+b", "t=1,v1=+f", "t=1,v1=00,v1=+0"] {
            assert_eq!(
                parse_formspree_header(bad),
                Err(AuthError::MalformedHeader),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_formspree_header("t=1,v1=0a0B").unwrap().signatures,
            vec![vec![0x0a, 0x0b]]
        );
    }

    #[test]
    fn with_no_secret_configured_the_endpoint_is_open() {
        let p = Presented::default();
        assert_eq!(verify(&Secrets::default(), &p, BODY, 0), Ok(Proof::Open));
    }

    #[test]
    fn with_secrets_configured_a_bare_request_is_refused() {
        let p = Presented::default();
        assert_eq!(verify(&secrets(), &p, BODY, 0), Err(AuthError::Missing));
    }

    #[test]
    fn any_one_valid_proof_is_enough() {
        let tally = sign_base64("tally-secret", BODY);
        let p = Presented {
            tally_signature: Some(&tally),
            ..Default::default()
        };
        assert_eq!(verify(&secrets(), &p, BODY, 0), Ok(Proof::Tally));
        let p = Presented {
            shared_secret: Some("shared-secret"),
            ..Default::default()
        };
        assert_eq!(verify(&secrets(), &p, BODY, 0), Ok(Proof::SharedSecret));
    }

    #[test]
    fn a_wrong_shared_secret_is_refused() {
        let p = Presented {
            shared_secret: Some("shared-secreT"),
            ..Default::default()
        };
        assert_eq!(
            verify(&secrets(), &p, BODY, 0),
            Err(AuthError::BadSharedSecret)
        );
        let p = Presented {
            shared_secret: Some(""),
            ..Default::default()
        };
        assert_eq!(
            verify(&secrets(), &p, BODY, 0),
            Err(AuthError::BadSharedSecret)
        );
    }

    #[test]
    fn a_header_for_an_unconfigured_platform_proves_nothing() {
        let only_shared = Secrets {
            shared: Some("s".into()),
            ..Default::default()
        };
        let tally = sign_base64("tally-secret", BODY);
        let p = Presented {
            tally_signature: Some(&tally),
            ..Default::default()
        };
        assert_eq!(verify(&only_shared, &p, BODY, 0), Err(AuthError::Missing));
    }

    #[test]
    fn constant_time_eq_handles_different_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}

/// The admin API's bearer check. It fails closed: with no `API_KEY` set, nothing is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAuth {
    Allowed,
    /// Wrong or missing `Authorization: Bearer` header.
    Denied,
    /// `API_KEY` is not configured.
    Disabled,
}

pub fn check_bearer(api_key: Option<&str>, authorization: Option<&str>) -> AdminAuth {
    let Some(key) = api_key.filter(|k| !k.is_empty()) else {
        return AdminAuth::Disabled;
    };
    // The auth scheme is case-insensitive (RFC 9110); the token is compared exactly.
    let given = authorization
        .map(str::trim)
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(g) if constant_time_eq(key.as_bytes(), g.as_bytes()) => AdminAuth::Allowed,
        _ => AdminAuth::Denied,
    }
}

#[cfg(test)]
mod bearer_tests {
    use super::*;

    #[test]
    fn the_admin_api_fails_closed_without_a_key() {
        assert_eq!(check_bearer(None, Some("Bearer x")), AdminAuth::Disabled);
        assert_eq!(check_bearer(Some(""), Some("Bearer ")), AdminAuth::Disabled);
    }

    #[test]
    fn only_the_exact_bearer_token_is_allowed() {
        let k = Some("s3cret");
        assert_eq!(check_bearer(k, Some("Bearer s3cret")), AdminAuth::Allowed);
        assert_eq!(
            check_bearer(k, Some("  Bearer s3cret ")),
            AdminAuth::Allowed
        );
        assert_eq!(check_bearer(k, Some("Bearer s3cre")), AdminAuth::Denied);
        assert_eq!(check_bearer(k, Some("Basic s3cret")), AdminAuth::Denied);
        assert_eq!(check_bearer(k, Some("s3cret")), AdminAuth::Denied);
        assert_eq!(check_bearer(k, None), AdminAuth::Denied);
    }
}

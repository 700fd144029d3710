use super::*;
use crate::domain::mxid::MxidError;

const TALLY: &str = include_str!("../../../tests/fixtures/tally.json");
const TYPEFORM: &str = include_str!("../../../tests/fixtures/typeform.json");
const GENERIC: &str = include_str!("../../../tests/fixtures/generic.json");
const HTML: &str = include_str!("../../../tests/fixtures/html_form.txt");

fn json(body: &str) -> Submission {
    parse_submission(BodyKind::Json, body.as_bytes()).unwrap()
}

#[test]
fn a_tally_payload_yields_its_matrix_id_and_event_id() {
    let s = json(TALLY);
    assert_eq!(s.platform, Platform::Tally);
    assert_eq!(s.matrix_id(None).unwrap().as_str(), "@alice:localhost");
    assert_eq!(
        s.delivery_id.as_deref(),
        Some("a4cb511e-d513-4fa5-baee-b815d718dfd1")
    );
}

#[test]
fn a_typeform_payload_yields_its_matrix_id_and_event_id() {
    let s = json(TYPEFORM);
    assert_eq!(s.platform, Platform::Typeform);
    assert_eq!(s.matrix_id(None).unwrap().as_str(), "@bob:localhost");
    assert_eq!(s.delivery_id.as_deref(), Some("01HF7ZQ7J4Y3D0Q6J5W9V2Y3XB"));
}

#[test]
fn typeform_fields_answer_to_ref_id_and_title() {
    let s = json(TYPEFORM);
    for name in [
        "matrix_id",
        "SMEUb7VJz92Q",
        "Your Matrix ID (like @you:example.org)",
    ] {
        assert_eq!(s.matrix_id(Some(name)).unwrap().as_str(), "@bob:localhost");
    }
    assert_eq!(s.matrix_id_text(Some("source")).unwrap(), "A friend");
}

#[test]
fn typeform_hidden_fields_are_fields_too() {
    let s = json(TYPEFORM);
    assert_eq!(s.matrix_id_text(Some("utm_source")).unwrap(), "newsletter");
}

#[test]
fn a_generic_json_object_uses_its_known_keys() {
    let s = json(GENERIC);
    assert_eq!(s.platform, Platform::Json);
    assert_eq!(s.matrix_id(None).unwrap().as_str(), "@carol:localhost");
    for key in ["user_id", "mxid"] {
        let body = format!(r#"{{"{key}":"dan:localhost","other":"@eve:localhost"}}"#);
        assert_eq!(
            json(&body).matrix_id(None).unwrap().as_str(),
            "@dan:localhost"
        );
    }
}

#[test]
fn an_html_form_body_is_decoded() {
    let s = parse_submission(BodyKind::UrlEncoded, HTML.as_bytes()).unwrap();
    assert_eq!(s.platform, Platform::HtmlForm);
    assert_eq!(s.matrix_id(None).unwrap().as_str(), "@dave:localhost");
    assert_eq!(s.delivery_id, None);
}

#[test]
fn form_field_picks_by_key_or_label_case_insensitively() {
    let s = json(TALLY);
    for name in ["question_w4Q0vW", "your matrix id", " Your Matrix ID "] {
        assert_eq!(
            s.matrix_id(Some(name)).unwrap().as_str(),
            "@alice:localhost"
        );
    }
    assert_eq!(
        s.matrix_id(Some("nope")),
        Err(FormError::NamedFieldMissing("nope".into()))
    );
}

#[test]
fn an_unlabeled_field_whose_value_is_an_id_is_found() {
    let body = r#"{"data":{"fields":[{"key":"q1","label":"Name","value":"Al"},
            {"key":"q2","label":"Handle","value":" @al:example.org "}]}}"#;
    assert_eq!(
        json(body).matrix_id(None).unwrap().as_str(),
        "@al:example.org"
    );
}

#[test]
fn a_time_of_day_is_not_mistaken_for_an_id() {
    let body = r#"{"data":{"fields":[{"key":"q1","label":"When","value":"12:30"}]}}"#;
    assert_eq!(json(body).matrix_id(None), Err(FormError::NoMatrixId));
}

#[test]
fn two_candidate_fields_are_ambiguous() {
    let body = r#"{"data":{"fields":[
            {"key":"q1","label":"Matrix ID","value":"@a:x.org"},
            {"key":"q2","label":"Backup matrix account","value":"@b:x.org"}]}}"#;
    assert_eq!(
        json(body).matrix_id(None),
        Err(FormError::Ambiguous(vec![
            "Matrix ID".into(),
            "Backup matrix account".into()
        ]))
    );
    let body = r#"{"data":{"fields":[
            {"key":"q1","label":"Me","value":"@a:x.org"},
            {"key":"q2","label":"Friend","value":"@b:x.org"}]}}"#;
    assert!(matches!(
        json(body).matrix_id(None),
        Err(FormError::Ambiguous(_))
    ));
}

#[test]
fn a_labelled_field_wins_over_unlabelled_id_like_values() {
    let body = r#"{"data":{"fields":[
            {"key":"q1","label":"Matrix","value":"@a:x.org"},
            {"key":"q2","label":"Referrer","value":"@b:x.org"}]}}"#;
    assert_eq!(json(body).matrix_id(None).unwrap().as_str(), "@a:x.org");
}

#[test]
fn an_invalid_id_reports_why() {
    let body = r#"{"matrix_id":"not an id"}"#;
    assert_eq!(
        json(body).matrix_id(None),
        Err(FormError::InvalidMxid {
            field: "matrix_id".into(),
            error: MxidError::MissingColon
        })
    );
}

#[test]
fn missing_id_is_reported() {
    assert_eq!(
        json(r#"{"note":"hi"}"#).matrix_id(None),
        Err(FormError::NoMatrixId)
    );
    // An empty field named for the ID is a missing answer, not a reason to look elsewhere.
    assert_eq!(
        json(r#"{"matrix_id":"","other":"@b:x.org"}"#).matrix_id(None),
        Err(FormError::InvalidMxid {
            field: "matrix_id".into(),
            error: MxidError::Empty
        })
    );
}

#[test]
fn honeypots_trigger_only_when_filled() {
    let hp = vec!["website".to_owned()];
    assert!(!json(TALLY).honeypot_filled(&hp), "null value");
    assert!(!json(TYPEFORM).honeypot_filled(&hp), "empty hidden field");
    let html = parse_submission(BodyKind::UrlEncoded, HTML.as_bytes()).unwrap();
    assert!(!html.honeypot_filled(&hp));
    let filled = parse_submission(
        BodyKind::UrlEncoded,
        b"matrix_id=%40a%3Ax.org&website=http%3A%2F%2Fspam",
    )
    .unwrap();
    assert!(filled.honeypot_filled(&hp));
    assert!(filled.honeypot_filled(&["WEBSITE".to_owned()]));
    assert!(!filled.honeypot_filled(&[]));
}

#[test]
fn content_types_are_recognised() {
    assert_eq!(body_kind(Some("application/json"), b""), Ok(BodyKind::Json));
    assert_eq!(
        body_kind(Some("Application/JSON; charset=utf-8"), b""),
        Ok(BodyKind::Json)
    );
    assert_eq!(
        body_kind(Some("application/x-www-form-urlencoded"), b""),
        Ok(BodyKind::UrlEncoded)
    );
    let boundary = |b: &str| BodyKind::Multipart(Boundary::new(b).unwrap());
    assert_eq!(
        body_kind(Some("multipart/form-data; boundary=x"), b""),
        Ok(boundary("x"))
    );
    assert_eq!(
        body_kind(
            Some("Multipart/Form-Data; charset=utf-8; BOUNDARY=\"--abc 12\""),
            b""
        ),
        Ok(boundary("--abc 12"))
    );
    for no_boundary in [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=\"\"",
        &format!("multipart/form-data; boundary={}", "b".repeat(71)),
    ] {
        assert_eq!(
            body_kind(Some(no_boundary), b""),
            Err(FormError::MissingBoundary),
            "{no_boundary}"
        );
    }
    for bad in [
        "text/plain",
        "multipart/mixed; boundary=x",
        "application/xml",
    ] {
        assert_eq!(
            body_kind(Some(bad), b"{}"),
            Err(FormError::UnsupportedMediaType)
        );
    }
}

#[test]
fn a_missing_content_type_is_sniffed() {
    assert_eq!(body_kind(None, b"  {\"a\":1}"), Ok(BodyKind::Json));
    assert_eq!(body_kind(None, b"a=b"), Ok(BodyKind::UrlEncoded));
    assert_eq!(
        body_kind(
            None,
            b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb"
        ),
        Ok(BodyKind::Multipart(Boundary::new("xyz").unwrap()))
    );
    assert_eq!(
        body_kind(None, b"hello"),
        Err(FormError::UnsupportedMediaType)
    );
    assert_eq!(
        body_kind(Some(""), b""),
        Err(FormError::UnsupportedMediaType)
    );
}

#[test]
fn malformed_bodies_are_refused_clearly() {
    assert_eq!(
        parse_submission(BodyKind::Json, b"{\"a\":"),
        Err(FormError::MalformedJson)
    );
    assert_eq!(
        parse_submission(BodyKind::Json, b"[1,2]"),
        Err(FormError::NotAnObject)
    );
    assert_eq!(
        parse_submission(BodyKind::Json, b"{\"a\":\"\xff\"}"),
        Err(FormError::InvalidUtf8)
    );
    assert_eq!(
        parse_submission(BodyKind::UrlEncoded, b"a=\xff"),
        Err(FormError::InvalidUtf8)
    );
    let bomb = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(
        parse_submission(BodyKind::Json, format!("{{\"a\":{bomb}}}").as_bytes()),
        Err(FormError::MalformedJson)
    );
}

#[test]
fn duplicate_json_keys_keep_the_last_value() {
    let s = json(r#"{"matrix_id":"@a:x.org","matrix_id":"@b:x.org"}"#);
    assert_eq!(s.matrix_id(None).unwrap().as_str(), "@b:x.org");
}

#[test]
fn delivery_keys_use_the_platform_id_or_the_body_hash() {
    assert_eq!(
        json(TALLY).delivery_key(TALLY.as_bytes()),
        "tally:a4cb511e-d513-4fa5-baee-b815d718dfd1"
    );
    assert_eq!(
        json(TYPEFORM).delivery_key(b"ignored"),
        "typeform:01HF7ZQ7J4Y3D0Q6J5W9V2Y3XB"
    );
    let tally_no_event = r#"{"data":{"responseId":"r9","fields":[]}}"#;
    assert_eq!(json(tally_no_event).delivery_key(b""), "tally:r9");
    let html = parse_submission(BodyKind::UrlEncoded, HTML.as_bytes()).unwrap();
    let key = html.delivery_key(HTML.as_bytes());
    assert_eq!(key, html.delivery_key(HTML.as_bytes()));
    assert!(key.starts_with("sha256:") && key.len() == 7 + 64);
    assert_ne!(key, html.delivery_key(b"other body"));
}

#[test]
fn an_overlong_delivery_id_falls_back_to_the_body_hash() {
    let body = format!(
        r#"{{"eventId":"{}","matrix_id":"@a:x.org"}}"#,
        "e".repeat(500)
    );
    assert!(json(&body)
        .delivery_key(body.as_bytes())
        .starts_with("sha256:"));
}

#[test]
fn the_sha256_helper_matches_a_known_digest() {
    assert_eq!(
        hex_sha256(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

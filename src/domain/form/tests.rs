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

// ---------------------------------------------------------------------------------------------
// One fixture per platform shape (tests/fixtures/intake/README.md names the pages they follow).
// ---------------------------------------------------------------------------------------------

mod fixtures {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../../../tests/fixtures/intake/", $name))
        };
    }

    fn parse(content_type: &str, body: &[u8]) -> Delivery {
        let kind = body_kind(Some(content_type), body).unwrap();
        parse_delivery(kind, body).unwrap()
    }

    fn submission(content_type: &str, body: &[u8]) -> Submission {
        match parse(content_type, body) {
            Delivery::Submission(s) => s,
            other => panic!("not a submission: {other:?}"),
        }
    }

    fn json(body: &[u8]) -> Submission {
        submission("application/json", body)
    }

    fn field<'a>(s: &'a Submission, name: &str) -> &'a Field {
        s.fields
            .iter()
            .find(|f| f.answers_to(name))
            .unwrap_or_else(|| panic!("no field {name:?} in {:?}", s.fields))
    }

    #[test]
    fn tally_resolves_option_ids_and_finds_the_typed_id() {
        let s = json(fixture!("tally-all-field-types.json"));
        assert_eq!(s.platform, Platform::Tally);
        assert_eq!(
            s.delivery_id.as_deref(),
            Some("a4cb511e-d513-4fa5-baee-b815d718dfd1")
        );
        assert_eq!(field(&s, "Multiple choice").value, "In progress");
        assert_eq!(field(&s, "Multiple choice").kind, FieldKind::Choice);
        assert_eq!(field(&s, "Dropdown").value, "Hard");
        assert_eq!(field(&s, "Multi-select").value, "Surf, Golf");
        let boxes = field(&s, "Checkboxes");
        assert_eq!(
            (boxes.kind, boxes.value.as_str()),
            (FieldKind::Checkbox, "Swimming, Skiing")
        );
        assert_eq!(field(&s, "Checkboxes (Soccer)").value, "");
        assert_eq!(field(&s, "Checkboxes (Skiing)").value, "true");
        assert!(field(&s, "utm_campaign").is_hidden());
        assert_eq!(field(&s, "Matrix").kind, FieldKind::Other);
        let choice = s.choose(None).unwrap();
        assert_eq!(choice.id.as_str(), "@alice:example.org");
        assert_eq!(choice.field.display_name(), "Your Matrix ID");
        assert!(choice.case_folded, "typed as @Alice");
        assert!(choice.note().is_some_and(|n| n.contains("lower case")));
    }

    #[test]
    fn tally_reads_an_id_prefilled_in_a_hidden_field() {
        let s = json(fixture!("tally-hidden-matrix-id.json"));
        assert_eq!(field(&s, "Are you new to Matrix?").value, "Yes");
        let choice = s.choose(None).unwrap();
        assert_eq!(choice.id.as_str(), "@dana:example.org");
        assert!(choice.field.is_hidden());
        assert!(!choice.case_folded);
        assert_eq!(choice.note(), None);
        assert_eq!(
            s.delivery_key(b""),
            "tally:0d5a4a8e-5b0c-4e8f-9a43-6f1f2b7c9d10"
        );
    }

    #[test]
    fn a_hidden_tally_honeypot_is_a_hit_but_a_visible_website_question_is_not() {
        let website = ["website".to_owned()];
        let bot = json(fixture!("tally-honeypot.json"));
        assert!(bot.honeypot_filled(&website));
        assert_eq!(bot.matrix_id(None).unwrap().as_str(), "@frank:example.org");
        // The same answers without the hidden field: an honest person with a website.
        let mut honest = bot.clone();
        honest.fields.retain(|f| !f.is_hidden());
        assert_eq!(field(&honest, "Website").value, "frank.example.org");
        assert!(!honest.honeypot_filled(&website));
        let all = json(fixture!("tally-all-field-types.json"));
        assert!(!all.honeypot_filled(&website), "a visible Website answer");
    }

    #[test]
    fn typeform_takes_refs_and_titles_from_the_definition() {
        let s = json(fixture!("typeform-example-payload.json"));
        assert_eq!(s.platform, Platform::Typeform);
        assert_eq!(s.delivery_key(b""), "typeform:LtWXD3crgy");
        let name = field(&s, "readable_ref_short_text");
        assert_eq!(name.ids, ["readable_ref_short_text", "JwWggjAKtOkA"]);
        assert_eq!(name.label.as_deref(), Some("What is your first name?"));
        assert_eq!(
            (name.kind, name.value.as_str()),
            (FieldKind::ShortText, "Laura")
        );
        for wanted in [
            "matrix_id",
            "Vx9Qz2BtLm4P",
            "What is your Matrix ID? (like @you:example.org)",
        ] {
            assert_eq!(
                s.matrix_id(Some(wanted)).unwrap().as_str(),
                "@laura:example.org",
                "{wanted}"
            );
        }
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@laura:example.org");
    }

    #[test]
    fn typeform_reads_every_answer_type_hidden_values_and_variables() {
        let s = json(fixture!("typeform-example-payload.json"));
        let expect = [
            ("readable_ref_yes_no", FieldKind::Boolean, "true"),
            ("readable_ref_multiple_choice", FieldKind::Choice, "Lisbon"),
            (
                "readable_ref_picture_choice",
                FieldKind::Choice,
                "London, Sydney, Paris",
            ),
            ("readable_ref_email", FieldKind::Email, "laura@example.com"),
            (
                "readable_ref_website",
                FieldKind::Url,
                "https://laura.example.com",
            ),
            ("readable_ref_number1", FieldKind::Number, "5"),
            ("readable_ref_legal", FieldKind::Boolean, "true"),
            ("utm_source", FieldKind::Hidden, "newsletter"),
            ("score", FieldKind::Calculated, "4"),
            ("name", FieldKind::Calculated, "typeform"),
        ];
        for (name, kind, value) in expect {
            let f = field(&s, name);
            assert_eq!((f.kind, f.value.as_str()), (kind, value), "{name}");
        }
        assert!(
            !s.honeypot_filled(&["website".to_owned()]),
            "empty hidden field"
        );
    }

    #[test]
    fn a_typeform_partial_response_is_not_a_submission() {
        let body = fixture!("typeform-partial-response.json");
        assert_eq!(
            parse("application/json", body),
            Delivery::Partial(Partial {
                platform: Platform::Typeform,
                delivery_id: Some("01JPARTIAL7Q2W3E4R5T6Y7U8I".into()),
            })
        );
        let refused = parse_submission(BodyKind::Json, body).unwrap_err();
        assert_eq!(refused, FormError::NotASubmission);
        assert_eq!(refused.status(), 200, "answered 2xx so it is not retried");
    }

    #[test]
    fn formspree_fields_follow_its_keys_and_skip_its_date() {
        let s = json(fixture!("formspree-submission.json"));
        assert_eq!(s.platform, Platform::Formspree);
        let names: Vec<&str> = s.fields.iter().map(Field::display_name).collect();
        assert_eq!(names, ["name", "matrix", "message"]);
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@gina:example.org");
        assert_eq!(s.delivery_id, None);
        let body = fixture!("formspree-submission.json");
        assert!(s.delivery_key(body).starts_with("sha256:"));
    }

    #[test]
    fn fillout_questions_are_typed_and_the_submission_id_is_the_key() {
        let s = json(fixture!("fillout-submission.json"));
        assert_eq!(s.platform, Platform::Fillout);
        assert_eq!(
            s.delivery_key(b""),
            "fillout:0a2f5d3c-8b1e-4f6a-9c7d-2e4b6a8c0d1f"
        );
        let new = field(&s, "Are you new to Matrix?");
        assert_eq!((new.kind, new.value.as_str()), (FieldKind::Choice, "Yes"));
        assert_eq!(field(&s, "How many rooms have you joined?").value, "3");
        assert!(field(&s, "ref").is_hidden());
        let choice = s.choose(None).unwrap();
        assert_eq!(choice.id.as_str(), "@hana:example.org");
        assert_eq!(choice.field.display_name(), "Your Matrix ID");
    }

    #[test]
    fn fillout_url_parameters_are_hidden_fields() {
        let s = json(fixture!("fillout-url-parameter.json"));
        let choice = s.choose(None).unwrap();
        assert_eq!(choice.id.as_str(), "@ivo:example.org");
        assert!(choice.field.is_hidden());
    }

    #[test]
    fn jotform_reads_raw_request_and_its_submission_id() {
        let body = fixture!("jotform-webhook.multipart");
        let ct = "multipart/form-data; boundary=------------------------5c8d1f0a7e2b4c39";
        let s = submission(ct, body);
        assert_eq!(s.platform, Platform::Jotform);
        assert_eq!(s.delivery_key(body), "jotform:5923456789012345678");
        let id = field(&s, "q3_matrixId");
        assert_eq!(id.ids, ["q3_matrixId", "matrixId"]);
        assert_eq!(field(&s, "whichMatrix").value, "Element, FluffyChat");
        assert!(
            s.fields.iter().all(|f| f.ids[0].starts_with('q')),
            "slug and event_id are not answers"
        );
        // "q4_areYou" and "q7_whichMatrix" mention Matrix too, but answer yes/no or a list.
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@mia:example.org");
        assert_eq!(
            s.matrix_id(Some("matrixId")).unwrap().as_str(),
            "@mia:example.org"
        );
    }

    #[test]
    fn google_named_values_are_questions_with_arrays_of_answers() {
        let s = json(fixture!("google-apps-script-namedvalues.json"));
        assert_eq!(s.platform, Platform::GoogleForms);
        let f = field(&s, "Your Matrix ID");
        assert_eq!(
            (f.label.as_deref(), f.ids.len()),
            (Some("Your Matrix ID"), 0)
        );
        let choice = s.choose(None).unwrap();
        assert_eq!(choice.id.as_str(), "@jo:example.org");
        assert!(choice.case_folded);
        // A visible question is never a honeypot, whatever it is called.
        assert!(!s.honeypot_filled(&["Referred by".to_owned()]));
    }

    #[test]
    fn google_bare_named_values_and_flat_posts_are_read_too() {
        let s = json(fixture!("google-apps-script-bare-namedvalues.json"));
        assert_eq!(s.platform, Platform::Json);
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@jo:example.org");
        let flat = fixture!("google-apps-script-flat.txt");
        let s = submission("application/x-www-form-urlencoded", flat);
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@lee:example.org");
    }

    #[test]
    fn an_html_form_may_post_multipart() {
        let body = fixture!("html-form.multipart");
        let ct = "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW";
        let s = submission(ct, body);
        assert_eq!(s.platform, Platform::HtmlForm);
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@nia:example.org");
        assert!(!s.honeypot_filled(&["website".to_owned()]));
        assert_eq!(field(&s, "cf-turnstile-response").value, "0.xYz");
    }
}

// ---------------------------------------------------------------------------------------------
// Field choice and honeypots, the same for every platform.
// ---------------------------------------------------------------------------------------------

mod choice {
    use super::*;

    fn tally(fields: serde_json::Value) -> Submission {
        let body = serde_json::json!({"eventId": "e", "data": {"fields": fields}}).to_string();
        parse_submission(BodyKind::Json, body.as_bytes()).unwrap()
    }

    #[test]
    fn are_you_new_to_matrix_yes_is_never_a_candidate() {
        let s = tally(serde_json::json!([
            {"key": "q1", "label": "Are you new to Matrix?", "type": "MULTIPLE_CHOICE",
             "value": ["y"], "options": [{"id": "y", "text": "Yes"}]},
            {"key": "q2", "label": "Handle", "type": "INPUT_TEXT", "value": "@al:example.org"},
        ]));
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@al:example.org");
        // Untyped fields (an HTML form, Google Forms) answered yes/no are read as yes/no.
        let html = parse_submission(
            BodyKind::UrlEncoded,
            b"new_to_matrix=Yes&handle=%40al%3Aexample.org",
        )
        .unwrap();
        assert_eq!(html.matrix_id(None).unwrap().as_str(), "@al:example.org");
    }

    #[test]
    fn a_mistyped_matrix_id_is_never_replaced_by_a_referrer() {
        let s = tally(serde_json::json!([
            {"key": "q1", "label": "Matrix ID", "type": "INPUT_TEXT", "value": "al@example.org"},
            {"key": "q2", "label": "Referred by", "type": "INPUT_TEXT", "value": "@bob:example.org"},
        ]));
        let err = s.matrix_id(None).unwrap_err();
        assert_eq!(
            err,
            FormError::InvalidMxid {
                field: "Matrix ID".into(),
                error: MxidError::MissingColon
            }
        );
        assert_eq!(err.status(), 400);
        assert!(err.message().contains("\"Matrix ID\""), "{}", err.message());
        // What was typed is still at hand, to record it.
        assert_eq!(s.matrix_id_text(None), Ok("al@example.org"));
    }

    #[test]
    fn of_several_matrix_fields_the_valid_one_wins() {
        let s = tally(serde_json::json!([
            {"key": "q0", "label": "matrix_id", "type": "HIDDEN_FIELDS", "value": null},
            {"key": "q1", "label": "Your Matrix ID", "type": "INPUT_TEXT", "value": "@al:example.org"},
            {"key": "q2", "label": "Matrix server (if not matrix.org)", "type": "INPUT_TEXT", "value": "example.org"},
        ]));
        let choice = s.choose(None).unwrap();
        assert_eq!(choice.id.as_str(), "@al:example.org");
        assert_eq!(choice.field.display_name(), "Your Matrix ID");
    }

    #[test]
    fn an_unfilled_hidden_matrix_field_is_no_candidate_but_an_empty_visible_one_is() {
        let s = tally(serde_json::json!([
            {"key": "q0", "label": "matrix_id", "type": "HIDDEN_FIELDS", "value": null},
            {"key": "q1", "label": "Handle", "type": "INPUT_TEXT", "value": "@al:example.org"},
        ]));
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@al:example.org");
        let s = tally(serde_json::json!([
            {"key": "q0", "label": "Matrix ID", "type": "INPUT_TEXT", "value": ""},
            {"key": "q1", "label": "Handle", "type": "INPUT_TEXT", "value": "@al:example.org"},
        ]));
        assert_eq!(
            s.matrix_id(None),
            Err(FormError::InvalidMxid {
                field: "Matrix ID".into(),
                error: MxidError::Empty
            })
        );
    }

    #[test]
    fn two_different_valid_matrix_fields_are_ambiguous_and_named() {
        let s = tally(serde_json::json!([
            {"key": "q1", "label": "Matrix ID", "type": "INPUT_TEXT", "value": "@a:x.org"},
            {"key": "q2", "label": "Backup Matrix account", "type": "INPUT_TEXT", "value": "@b:x.org"},
        ]));
        let err = s.matrix_id(None).unwrap_err();
        assert_eq!(
            err,
            FormError::Ambiguous(vec!["Matrix ID".into(), "Backup Matrix account".into()])
        );
        assert!(err.message().contains("FORM_FIELD"));
        assert_eq!(
            s.matrix_id(Some("Backup Matrix account")).unwrap().as_str(),
            "@b:x.org"
        );
    }

    #[test]
    fn fields_that_agree_on_the_id_are_not_ambiguous() {
        let s = tally(serde_json::json!([
            {"key": "q1", "label": "Matrix ID", "type": "INPUT_TEXT", "value": "@a:x.org"},
            {"key": "q2", "label": "matrix_id", "type": "HIDDEN_FIELDS", "value": "@A:x.org"},
        ]));
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@a:x.org");
    }

    #[test]
    fn several_matrix_fields_none_valid_is_an_error_naming_them() {
        let s = tally(serde_json::json!([
            {"key": "q1", "label": "Matrix ID", "type": "INPUT_TEXT", "value": "al"},
            {"key": "q2", "label": "Matrix server", "type": "INPUT_TEXT", "value": "example.org"},
        ]));
        let err = s.matrix_id(None).unwrap_err();
        assert_eq!(
            err,
            FormError::NoValidMatrixId(vec!["Matrix ID".into(), "Matrix server".into()])
        );
        assert!(err.message().contains("\"Matrix ID\", \"Matrix server\""));
        // Only one of them answered: its own error says what is wrong.
        let s = tally(serde_json::json!([
            {"key": "q1", "label": "Matrix ID", "type": "INPUT_TEXT", "value": "al"},
            {"key": "q2", "label": "Matrix server", "type": "INPUT_TEXT", "value": ""},
        ]));
        assert!(matches!(
            s.matrix_id(None),
            Err(FormError::InvalidMxid { field, error: MxidError::MissingColon }) if field == "Matrix ID"
        ));
    }

    #[test]
    fn without_a_matrix_field_the_one_explicit_id_is_used() {
        let s = tally(serde_json::json!([
            {"key": "q1", "label": "Name", "type": "INPUT_TEXT", "value": "Al"},
            {"key": "q2", "label": "Handle", "type": "INPUT_TEXT", "value": "https://matrix.to/#/@al:x.org"},
            {"key": "q3", "label": "When", "type": "INPUT_TIME", "value": "12:30"},
            {"key": "q4", "label": "Moderator", "type": "DROPDOWN", "value": ["m"],
             "options": [{"id": "m", "text": "@mod:x.org"}]},
        ]));
        assert_eq!(s.matrix_id(None).unwrap().as_str(), "@al:x.org");
        let none = tally(serde_json::json!([
            {"key": "q1", "label": "Name", "type": "INPUT_TEXT", "value": "Al"},
            {"key": "q3", "label": "Server", "type": "INPUT_TEXT", "value": "al:x.org"},
        ]));
        assert_eq!(none.matrix_id(None), Err(FormError::NoMatrixId));
    }

    #[test]
    fn form_field_names_a_key_ref_label_title_or_name() {
        let s = tally(serde_json::json!([
            {"key": "question_abc", "label": "Who are you on Matrix?", "type": "INPUT_TEXT", "value": "@a:x.org"},
            {"key": "question_def", "label": "Friend", "type": "INPUT_TEXT", "value": "@b:x.org"},
        ]));
        assert_eq!(
            s.matrix_id(Some("question_def")).unwrap().as_str(),
            "@b:x.org"
        );
        assert_eq!(s.matrix_id(Some("friend")).unwrap().as_str(), "@b:x.org");
        assert_eq!(
            s.matrix_id(Some("nope")),
            Err(FormError::NamedFieldMissing("nope".into()))
        );
    }

    #[test]
    fn honeypots_match_ids_and_only_hidden_fields_labels() {
        let s = tally(serde_json::json!([
            {"key": "q1", "label": "Website", "type": "INPUT_LINK", "value": "me.example"},
            {"key": "q2", "label": "url", "type": "HIDDEN_FIELDS", "value": "x"},
            {"key": "homepage", "label": "Homepage", "type": "INPUT_LINK", "value": "me.example"},
        ]));
        assert!(
            !s.honeypot_filled(&["website".to_owned()]),
            "a visible label"
        );
        assert!(
            s.honeypot_filled(&["URL".to_owned()]),
            "a hidden field's label"
        );
        assert!(s.honeypot_filled(&["homepage".to_owned()]), "a key");
        assert!(!s.honeypot_filled(&["q2".to_owned(), "nothing".to_owned()][1..]));
    }

    #[test]
    fn error_messages_repeat_only_a_short_clean_excerpt_of_names() {
        let long = format!("Matrix\u{202e}\r\n\"{}", "x".repeat(500));
        let err = FormError::Ambiguous(vec![long; 9]);
        let msg = err.message();
        assert!(msg.chars().count() < 400, "{msg}");
        assert!(!msg.contains('\u{202e}') && !msg.contains('\r') && !msg.contains('\n'));
        assert!(msg.contains("and 4 more"), "{msg}");
    }
}

#[test]
fn jotform_flat_question_parts_are_read_beside_raw_request() {
    let body = b"--b\r\nContent-Disposition: form-data; name=\"formID\"\r\n\r\n1\r\n\
        --b\r\nContent-Disposition: form-data; name=\"submissionID\"\r\n\r\n2\r\n\
        --b\r\nContent-Disposition: form-data; name=\"rawRequest\"\r\n\r\n{\"q3_name\":\"Al\"}\r\n\
        --b\r\nContent-Disposition: form-data; name=\"q3_name\"\r\n\r\nAl\r\n\
        --b\r\nContent-Disposition: form-data; name=\"q4_matrixId\"\r\n\r\n@al:x.org\r\n\
        --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n@no:x.org\r\n\
        --b--\r\n";
    let s = parse_submission(BodyKind::Multipart(Boundary::new("b").unwrap()), body).unwrap();
    assert_eq!(s.platform, Platform::Jotform);
    let keys: Vec<&str> = s.fields.iter().map(|f| f.ids[0].as_str()).collect();
    assert_eq!(keys, ["q3_name", "q4_matrixId"]);
    assert_eq!(s.matrix_id(None).unwrap().as_str(), "@al:x.org");
    assert_eq!(s.delivery_id.as_deref(), Some("2"));
}

#[test]
fn a_broken_multipart_body_is_refused_clearly() {
    let kind = BodyKind::Multipart(Boundary::new("b").unwrap());
    let err = parse_submission(kind, b"--b\r\nno headers").unwrap_err();
    assert_eq!(err, FormError::MalformedMultipart);
    assert_eq!(err.status(), 400);
    let bad_json = b"--b\r\nContent-Disposition: form-data; name=\"rawRequest\"\r\n\r\n{\r\n--b--";
    assert_eq!(
        parse_submission(kind, bad_json),
        Err(FormError::MalformedJson)
    );
}

#[test]
fn answers_leave_out_the_id_the_honeypots_and_tallys_per_option_copies() {
    let body = r#"{"eventId":"e1","eventType":"FORM_RESPONSE","data":{"fields":[
        {"key":"q1","label":"Matrix ID","type":"INPUT_TEXT","value":"@ann:x.org"},
        {"key":"q2","label":"Why join?","type":"TEXTAREA","value":"I like <b>rust</b>"},
        {"key":"q3","label":"Topics","type":"CHECKBOXES","value":["o1"],
         "options":[{"id":"o1","text":"Games"},{"id":"o2","text":"Music"}]},
        {"key":"q3_o1","label":"Topics (Games)","type":"CHECKBOXES","value":true},
        {"key":"q3_o2","label":"Topics (Music)","type":"CHECKBOXES","value":false},
        {"key":"website","label":"Website","type":"HIDDEN_FIELDS","value":"spam"},
        {"key":"q5","label":"Empty","type":"INPUT_TEXT","value":""}
    ]}}"#;
    let s = json(body);
    let choice = s.choose(None).unwrap();
    let answers = s.answers(choice.field, &["website".to_owned()]);
    assert_eq!(
        answers,
        vec![
            ("Why join?".to_owned(), "I like <b>rust</b>".to_owned()),
            ("Topics".to_owned(), "Games".to_owned()),
        ]
    );
}

#[test]
fn answers_are_bounded_in_number_and_length() {
    let mut fields = String::from(r#"{"matrix_id":"@ann:x.org""#);
    for i in 0..30 {
        fields.push_str(&format!(r#","q{i}":"{}""#, "a".repeat(500)));
    }
    fields.push('}');
    let s = json(&fields);
    let choice = s.choose(None).unwrap();
    let answers = s.answers(choice.field, &[]);
    assert_eq!(answers.len(), choose::MAX_ANSWERS);
    assert!(answers
        .iter()
        .all(|(_, v)| v.chars().count() == choose::MAX_ANSWER_CHARS && v.ends_with('…')));
}

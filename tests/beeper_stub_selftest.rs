//! Checks the Beeper stub of the end-to-end suite over real HTTP on 127.0.0.1, without
//! starting Synapse or the worker: first with hand-written requests, then with the requests
//! and parsers of `knock::matrix::login`.

#[path = "e2e/beeper_stub.rs"]
mod beeper_stub;

use std::net::TcpStream;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use beeper_stub::BeeperStub;
use knock::matrix::login::{self, BeeperError};
use knock::matrix::{HttpRequest, HttpResponse, Method, TransportError};

const SECRET: &str = "stub-selftest-secret";
const CODE: &str = "482913";
const BEARER: &str = "Bearer BEEPER-PRIVATE-API-PLEASE-DONT-USE";

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

/// Posts `body` as JSON, with the private bearer when `authorized`; returns status and JSON.
fn post(stub: &BeeperStub, path: &str, body: Value, authorized: bool) -> (u16, Value) {
    let mut req = agent()
        .post(&format!("{}{path}", stub.url))
        .set("Content-Type", "application/json");
    if authorized {
        req = req.set("Authorization", BEARER);
    }
    let resp = match req.send_string(&body.to_string()) {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("POST {path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().expect("read the stub's reply");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends a request built by `knock::matrix::login`, as the worker's transport would.
fn send(req: HttpRequest) -> Result<HttpResponse, TransportError> {
    let mut call = agent().request(req.method.as_str(), &req.url);
    for (name, value) in &req.headers {
        call = call.set(name, value);
    }
    let result = match (req.method, &req.body) {
        (Method::Get, _) | (_, None) => call.call(),
        (_, Some(body)) => call.send_string(body),
    };
    let resp = match result {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => return Err(TransportError::Network(e.to_string())),
    };
    Ok(HttpResponse {
        status: resp.status(),
        retry_after: resp.header("Retry-After").map(str::to_owned),
        body: resp.into_string().unwrap_or_default(),
    })
}

/// Checks the HS256 signature with an independent HMAC and returns the claims.
fn verified_claims(jwt: &str, secret: &str) -> Value {
    let (signing_input, signature) = jwt.rsplit_once('.').expect("a JWT has three parts");
    let (header, claims) = signing_input
        .split_once('.')
        .expect("a JWT has three parts");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    mac.verify_slice(&B64URL.decode(signature).expect("base64url signature"))
        .expect("the signature matches the secret");
    let header: Value = serde_json::from_slice(&B64URL.decode(header).unwrap()).unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
    serde_json::from_slice(&B64URL.decode(claims).unwrap()).unwrap()
}

fn start_and_email(stub: &BeeperStub, email: &str) -> String {
    let (status, started) = post(stub, "/user/login", json!({}), true);
    assert_eq!(status, 200, "{started}");
    let id = started["request"]
        .as_str()
        .expect("a request id")
        .to_owned();
    let (status, _) = post(
        stub,
        "/user/login/email",
        json!({"request": id, "email": email}),
        true,
    );
    assert_eq!(status, 200);
    id
}

#[test]
fn the_three_steps_give_a_jwt_signed_with_the_secret() {
    let stub = BeeperStub::start(SECRET, CODE);
    let (status, started) = post(&stub, "/user/login", json!({}), true);
    assert_eq!(status, 200);
    let id = started["request"].as_str().unwrap().to_owned();
    assert_eq!(started["type"], json!(["email"]));
    assert!(started["expires"].as_str().unwrap().ends_with('Z'));

    let email_body = json!({"request": id, "email": "Knock.Bot@example.org"});
    assert_eq!(
        post(&stub, "/user/login/email", email_body.clone(), true),
        (200, json!({}))
    );
    assert_eq!(stub.last_email().as_deref(), Some("Knock.Bot@example.org"));

    let verify_body = json!({"request": id, "response": CODE});
    let (status, verified) = post(&stub, "/user/login/response", verify_body.clone(), true);
    assert_eq!(status, 200, "{verified}");
    let claims = verified_claims(verified["token"].as_str().unwrap(), SECRET);
    assert_eq!(claims["sub"], "knock.bot");
    assert_eq!(claims["iss"], "beeper-stub");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 300);

    assert_eq!(
        stub.calls(),
        vec![
            ("/user/login".to_owned(), json!({})),
            ("/user/login/email".to_owned(), email_body),
            ("/user/login/response".to_owned(), verify_body),
        ]
    );
}

#[test]
fn calls_without_the_private_bearer_are_refused() {
    let stub = BeeperStub::start(SECRET, CODE);
    for path in ["/user/login", "/user/login/email", "/user/login/response"] {
        let (status, body) = post(&stub, path, json!({}), false);
        assert_eq!(status, 401, "{path}");
        assert!(body["error"].is_string());
    }
    let wrong = agent()
        .post(&format!("{}/user/login", stub.url))
        .set("Authorization", "Bearer something-else")
        .set("Content-Type", "application/json")
        .send_string("{}");
    assert!(matches!(wrong, Err(ureq::Error::Status(401, _))));
    assert_eq!(stub.calls().len(), 4, "refused calls are recorded too");
}

#[test]
fn unknown_paths_and_unknown_requests_are_not_found() {
    let stub = BeeperStub::start(SECRET, CODE);
    assert_eq!(post(&stub, "/user/logout", json!({}), true).0, 404);
    let unknown = json!({"request": "nope", "email": "a@example.org"});
    assert_eq!(post(&stub, "/user/login/email", unknown, true).0, 404);
    let unknown = json!({"request": "nope", "response": CODE});
    assert_eq!(post(&stub, "/user/login/response", unknown, true).0, 404);
    assert_eq!(stub.last_email(), None);
}

#[test]
fn wrong_codes_count_down_and_then_the_request_is_dead() {
    let stub = BeeperStub::start(SECRET, CODE);
    let id = start_and_email(&stub, "bot@example.org");
    for left in [2, 1, 0] {
        let wrong = json!({"request": id, "response": "000000"});
        assert_eq!(
            post(&stub, "/user/login/response", wrong, true),
            (403, json!({"retries": left}))
        );
    }
    let right = json!({"request": id, "response": CODE});
    assert_eq!(
        post(&stub, "/user/login/response", right, true),
        (403, json!({"retries": 0}))
    );
}

#[test]
fn a_code_works_only_once() {
    let stub = BeeperStub::start(SECRET, CODE);
    let id = start_and_email(&stub, "bot@example.org");
    let right = json!({"request": id, "response": CODE});
    assert_eq!(
        post(&stub, "/user/login/response", right.clone(), true).0,
        200
    );
    assert_eq!(post(&stub, "/user/login/response", right, true).0, 404);
}

#[test]
fn a_new_account_gets_a_lead_token_instead_of_a_jwt() {
    let stub = BeeperStub::start(SECRET, CODE);
    stub.set_new_account(true);
    let id = start_and_email(&stub, "new@example.org");
    let (status, body) = post(
        &stub,
        "/user/login/response",
        json!({"request": id, "response": CODE}),
        true,
    );
    assert_eq!(status, 200);
    assert!(body["leadToken"].is_string());
    assert!(body.get("token").is_none());
}

#[test]
fn localparts_come_from_the_email_lower_cased_and_restricted() {
    assert_eq!(
        beeper_stub::localpart_for("Knock.Bot@example.org"),
        "knock.bot"
    );
    assert_eq!(beeper_stub::localpart_for("a+b!c_d=e-f@x.y"), "abc_d=e-f");
}

#[test]
fn knocks_own_login_requests_and_parsers_work_against_the_stub() {
    let stub = BeeperStub::start(SECRET, CODE);
    let id = login::parse_beeper_start(send(login::beeper_start(&stub.url))).unwrap();
    login::parse_beeper_email(send(login::beeper_send_email(
        &stub.url,
        &id,
        "bot@example.org",
    )))
    .unwrap();
    let wrong = login::parse_beeper_verify(send(login::beeper_verify(&stub.url, &id, "111111")));
    assert_eq!(
        wrong,
        Err(BeeperError::WrongCode {
            retries_left: Some(2)
        })
    );
    let code = login::clean_code(" 482 913 ").unwrap();
    let jwt =
        login::parse_beeper_verify(send(login::beeper_verify(&stub.url, &id, &code))).unwrap();
    assert_eq!(verified_claims(&jwt, SECRET)["sub"], "bot");
    // The code is used up: the request is gone.
    assert_eq!(
        login::parse_beeper_verify(send(login::beeper_verify(&stub.url, &id, &code))),
        Err(BeeperError::Expired)
    );

    stub.set_new_account(true);
    let id = login::parse_beeper_start(send(login::beeper_start(&stub.url))).unwrap();
    login::parse_beeper_email(send(login::beeper_send_email(&stub.url, &id, "new@x.y"))).unwrap();
    assert_eq!(
        login::parse_beeper_verify(send(login::beeper_verify(&stub.url, &id, CODE))),
        Err(BeeperError::NewAccount)
    );
}

#[test]
fn dropping_the_stub_stops_it_listening() {
    let stub = BeeperStub::start(SECRET, CODE);
    let addr = stub.url.trim_start_matches("http://").to_owned();
    assert!(TcpStream::connect(&addr).is_ok());
    drop(stub);
    assert!(TcpStream::connect(&addr).is_err());
}

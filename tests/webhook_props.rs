//! Property tests of webhook request screening: arbitrary bodies and
//! headers never panic, and garbage always gets a 4xx.

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use bakehouse::triggers::webhook::{screen_request, Provider, ScreenSettings, Secret};
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use proptest::prelude::*;
use sha2::Sha256;

const SECRET: &str = "prop-secret";

fn settings(provider: Provider) -> ScreenSettings {
    ScreenSettings {
        provider,
        branch: "main".into(),
        repository: None,
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x-hub-signature-256".to_string()),
        Just("x-hub-signature".to_string()),
        Just("x-github-event".to_string()),
        Just("x-gitlab-token".to_string()),
        Just("x-gitlab-event".to_string()),
        Just("content-type".to_string()),
        "[a-z][a-z0-9-]{0,24}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("push".to_string()),
        Just("Push Hook".to_string()),
        Just("application/x-www-form-urlencoded".to_string()),
        "sha256=[0-9a-f]{0,70}",
        "[ -~]{0,80}",
    ]
}

fn request(
    headers: &[(String, String)],
    body: Option<String>,
    base64: bool,
    method: Option<String>,
) -> LambdaFunctionUrlRequest {
    let mut r = LambdaFunctionUrlRequest::default();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            r.headers.append(k, v);
        }
    }
    r.body = body;
    r.is_base64_encoded = base64;
    r.request_context.http.method = method;
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_requests_get_a_4xx(
        headers in proptest::collection::vec((header_name(), header_value()), 0..8),
        body in proptest::option::of(any::<String>()),
        base64 in any::<bool>(),
        method in proptest::option::of(prop_oneof![Just("POST".to_string()), "[A-Z]{0,8}"]),
        gitlab in any::<bool>(),
    ) {
        let provider = if gitlab { Provider::GitLab } else { Provider::GitHub };
        let secret = Secret::new(SECRET).expect("secret");
        let req = request(&headers, body, base64, method);
        match screen_request(&settings(provider), &secret, &req) {
            Ok(push) => prop_assert!(false, "garbage accepted as a push: {push:?}"),
            Err(answer) => prop_assert!(
                (400..500).contains(&answer.status),
                "status {} for garbage: {}", answer.status, answer.body
            ),
        }
    }

    #[test]
    fn signed_garbage_pushes_are_400(body in any::<Vec<u8>>()) {
        let text = String::from_utf8_lossy(&body).into_owned();
        let headers = vec![
            ("x-github-event".to_string(), "push".to_string()),
            ("x-hub-signature-256".to_string(), sign(text.as_bytes())),
        ];
        let secret = Secret::new(SECRET).expect("secret");
        let req = request(&headers, Some(text), false, Some("POST".into()));
        let answer = screen_request(&settings(Provider::GitHub), &secret, &req)
            .expect_err("garbage is not a push");
        prop_assert_eq!(answer.status, 400);
    }

    #[test]
    fn signed_other_events_are_ignored_with_a_reason(
        event in "[a-z_]{1,20}",
        body in "[ -~]{0,200}",
    ) {
        prop_assume!(event != "push");
        let headers = vec![
            ("x-github-event".to_string(), event.clone()),
            ("x-hub-signature-256".to_string(), sign(body.as_bytes())),
        ];
        let secret = Secret::new(SECRET).expect("secret");
        let req = request(&headers, Some(body), false, None);
        let answer = screen_request(&settings(Provider::GitHub), &secret, &req)
            .expect_err("not a push");
        prop_assert_eq!(answer.status, 202);
        prop_assert!(answer.body["reason"].as_str().unwrap_or_default().contains(&event));
    }
}

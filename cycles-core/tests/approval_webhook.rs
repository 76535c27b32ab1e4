//! The webhook approver against a real HTTP server on a loopback TCP socket, started by the
//! test: the approval service receives the request JSON (with the call and its digest), signs
//! with its own key, and its answer is verified against the policy before anything is held.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cycles_core::*;
use serde_json::{Value, json};

const START: i64 = 1_700_000_000_000;

fn service_key() -> ApproverKey {
    ApproverKey::from_secret("approval-service", [9; 32]).unwrap()
}

/// What the test server does with one request body: (status, response body), or hang.
enum Reply {
    Answer(u16, String),
    Hang,
}

/// A minimal HTTP/1.1 server: one thread, `Connection: close`, records every body it gets.
struct Server {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

fn read_request(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap();
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).unwrap();
    (head, body)
}

fn serve(handler: impl Fn(&Value) -> Reply + Send + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/approve", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (head, body) = read_request(&mut stream);
            assert!(head.starts_with("POST /approve HTTP/1.1\r\n"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/json"),
                "{head}"
            );
            let value: Value = serde_json::from_slice(&body).unwrap();
            seen.lock().unwrap().push(value.clone());
            match handler(&value) {
                Reply::Hang => {
                    // Keep the connection open without answering until the client gives up.
                    std::thread::sleep(Duration::from_secs(30));
                }
                Reply::Answer(status, text) => {
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = stream.write_all(resp.as_bytes());
                }
            }
        }
    });
    Server { url, bodies }
}

/// The service's decision logic: it signs as `key`, granting unless the volume is `prod`.
fn signing_service(key: ApproverKey) -> impl Fn(&Value) -> Reply + Send + 'static {
    move |v| {
        let req: ApprovalRequest = serde_json::from_value(v.clone()).unwrap();
        // The service checks that the arguments it is shown are the ones the digest binds.
        assert_eq!(req.call.digest(), req.call_digest);
        let answer = if req.call.args["volumeId"] == "prod" {
            ApprovalResponse::Deny(key.deny(&req, "prod volumes are never deleted").unwrap())
        } else {
            ApprovalResponse::Grant(key.grant(&req, START + 60_000).unwrap())
        };
        Reply::Answer(200, serde_json::to_string(&answer).unwrap())
    }
}

fn authority() -> Authority {
    let mut policy = Policy::default()
        .register("railway.delete_volume", Tier::T4)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 100));
    policy.approval.public_keys = vec![service_key().public_key_hex()];
    Authority::builder()
        .policy(policy)
        .clock(ManualClock::new(START))
        .build()
        .unwrap()
}

fn wipe(volume: &str) -> ReserveRequest {
    ReserveRequest::new(
        Subject::new().tenant("acme").agent("bot"),
        ToolCall::new("railway.delete_volume", json!({ "volumeId": volume })),
    )
}

fn reserved(auth: &Authority) -> i64 {
    auth.balances(None).unwrap()[0].reserved
}

#[test]
fn webhook_grant_is_verified_recorded_and_consumed() {
    let server = serve(signing_service(service_key()));
    let auth = authority();
    let approver = WebhookApprover::new(&server.url).timeout(Duration::from_secs(20));
    let r = auth
        .reserve_with_approver(&wipe("staging"), &approver)
        .unwrap();
    assert_eq!(reserved(&auth), 50);
    let id = r.decision.approval_request_id.clone().unwrap();
    let stored = auth.approval(&id).unwrap();
    assert_eq!(stored.status, ApprovalStatus::Consumed);
    assert_eq!(stored.grant.unwrap().approver_id, "approval-service");
    // The service saw the request as stored: id, subject, exact call, digest, tier, points.
    let bodies = server.bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    let sent = &bodies[0];
    assert_eq!(sent["request_id"], json!(id));
    assert_eq!(sent["status"], "PENDING");
    assert_eq!(sent["tier"], 4);
    assert_eq!(sent["risk_points"], 50);
    assert_eq!(sent["call"]["args"], json!({"volumeId": "staging"}));
    assert_eq!(sent["subject"], json!({"agent": "bot", "tenant": "acme"}));
    assert_eq!(sent["remaining"][0]["remaining"], 100);
    let kinds: Vec<_> = auth
        .audit(&AuditQuery::default())
        .unwrap()
        .iter()
        .map(|r| r.kind)
        .collect();
    assert!(kinds.ends_with(&[
        AuditKind::ApprovalRequested,
        AuditKind::Denial,
        AuditKind::ApprovalGranted,
        AuditKind::ApprovalConsumed,
        AuditKind::Reserve
    ]));
    assert!(auth.verify().unwrap().ok);
}

#[test]
fn webhook_signed_denial_is_recorded_and_nothing_is_held() {
    let server = serve(signing_service(service_key()));
    let auth = authority();
    let approver = WebhookApprover::new(&server.url).timeout(Duration::from_secs(20));
    let err = auth
        .reserve_with_approver(&wipe("prod"), &approver)
        .unwrap_err();
    assert_eq!(err.code(), "APPROVAL_REQUIRED");
    let id = err.decision().unwrap().approval_request_id.clone().unwrap();
    let stored = auth.approval(&id).unwrap();
    assert_eq!(stored.status, ApprovalStatus::Denied);
    assert_eq!(
        stored.denial.unwrap().reason,
        "prod volumes are never deleted"
    );
    assert_eq!(reserved(&auth), 0);
    let denied = auth
        .audit(&AuditQuery {
            kinds: vec![AuditKind::ApprovalDenied],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(denied.len(), 1);
}

#[test]
fn webhook_answer_signed_by_an_unlisted_key_is_rejected() {
    let impostor = ApproverKey::from_secret("approval-service", [8; 32]).unwrap();
    let server = serve(signing_service(impostor));
    let auth = authority();
    let approver = WebhookApprover::new(&server.url).timeout(Duration::from_secs(20));
    let err = auth
        .reserve_with_approver(&wipe("staging"), &approver)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CyclesError::ApprovalInvalid {
                reason: ApprovalInvalidReason::UnknownKey,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(reserved(&auth), 0);
    assert_eq!(
        auth.approvals(Some(ApprovalStatus::Pending)).unwrap().len(),
        1
    );
}

#[test]
fn webhook_timeout_fails_closed() {
    let server = serve(|_| Reply::Hang);
    let auth = authority();
    let approver = WebhookApprover::new(&server.url).timeout(Duration::from_millis(300));
    let err = auth
        .reserve_with_approver(&wipe("staging"), &approver)
        .unwrap_err();
    assert_eq!(err.code(), "APPROVER_UNAVAILABLE", "{err}");
    assert_eq!(reserved(&auth), 0);
    assert_eq!(
        auth.approvals(Some(ApprovalStatus::Pending)).unwrap().len(),
        1
    );
}

#[test]
fn webhook_error_status_or_garbage_fails_closed() {
    for reply in [
        || Reply::Answer(500, "{}".into()),
        || Reply::Answer(200, "<html>approved!</html>".into()),
        || Reply::Answer(200, r#"{"grant": {"approver_id": "x"}}"#.into()),
    ] {
        let server = serve(move |_| reply());
        let auth = authority();
        let approver = WebhookApprover::new(&server.url).timeout(Duration::from_secs(20));
        let err = auth
            .reserve_with_approver(&wipe("staging"), &approver)
            .unwrap_err();
        assert_eq!(err.code(), "APPROVER_UNAVAILABLE", "{err}");
        assert_eq!(reserved(&auth), 0);
    }
}

#[test]
fn unreachable_webhook_fails_closed() {
    // Bind then drop: nothing listens on the port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let auth = authority();
    let approver = WebhookApprover::new(format!("http://127.0.0.1:{port}/approve"))
        .timeout(Duration::from_secs(5));
    let err = auth
        .reserve_with_approver(&wipe("staging"), &approver)
        .unwrap_err();
    assert_eq!(err.code(), "APPROVER_UNAVAILABLE", "{err}");
    assert_eq!(reserved(&auth), 0);
}

//! A policy scope that skips a subject level (`tenant:acme/agent:intern` skips workflow)
//! applies only to subjects without that level. A subject that sets it would silently escape
//! the rule written for it (its budget, `max_tier`, caps), so such calls are denied
//! `POLICY_VIOLATION`, naming both scopes, and hold and charge nothing.

use cycles_core::*;
use serde_json::json;

fn policy() -> Policy {
    Policy::default()
        .register("deploy", Tier::T3)
        .register("read", Tier::T0)
        .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 10_000))
        .budget(BudgetSpec::new(
            "tenant:acme/agent:coder",
            Unit::RiskPoints,
            200,
        ))
        .budget(BudgetSpec::new(
            "tenant:acme/workspace:ops",
            Unit::RiskPoints,
            500,
        ))
        .max_tier("tenant:acme/agent:intern", Tier::T1)
}

fn auth() -> Authority {
    Authority::builder().policy(policy()).build().unwrap()
}

fn deploy() -> ToolCall {
    ToolCall::new("deploy", json!({"to": "prod"}))
}

fn records(a: &Authority) -> usize {
    a.audit(&AuditQuery::default()).unwrap().len()
}

#[test]
fn a_ceiling_written_for_an_agent_is_not_escaped_by_adding_a_workflow() {
    let a = auth();
    // The subject the rule was written for: the ceiling applies.
    let intern = Subject::new().tenant("acme").agent("intern");
    let d = a.decide(&DecideRequest::new(intern, deploy())).unwrap();
    assert_eq!(d.reason_code, Some(ReasonCode::TierNotPermitted));
    // The same agent inside a workflow: outside the rule's scope, so denied, not allowed.
    let in_workflow = Subject::new()
        .tenant("acme")
        .workflow("session-42")
        .agent("intern");
    let d = a
        .decide(&DecideRequest::new(in_workflow.clone(), deploy()))
        .unwrap();
    assert_eq!(d.decision, DecisionKind::Deny);
    assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation));
    assert!(
        d.rules
            .contains(&"scope_gap:tenant:acme/agent:intern".to_string()),
        "{:?}",
        d.rules
    );
    let msg = d.message.unwrap();
    assert!(msg.contains("max_tier[0]"), "{msg}");
    assert!(
        msg.contains("tenant:acme/workflow:session-42/agent:intern"),
        "{msg}"
    );
    // A read too: the subject is outside every rule written for it, whatever the call.
    let d = a
        .decide(&DecideRequest::new(
            in_workflow,
            ToolCall::new("read", json!({})),
        ))
        .unwrap();
    assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation));
}

#[test]
fn a_budget_written_for_an_agent_is_not_escaped_by_adding_a_workflow_and_nothing_is_held() {
    let a = auth();
    let before = a.balances(None).unwrap();
    let n = records(&a);
    let coder = Subject::new()
        .tenant("acme")
        .workflow("session-42")
        .agent("coder");
    let err = a
        .reserve(&ReserveRequest::new(coder.clone(), deploy()))
        .unwrap_err();
    let CyclesError::Denied(d) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation));
    assert!(
        d.message.as_deref().unwrap().contains("budgets[1]"),
        "{d:?}"
    );
    assert_eq!(a.balances(None).unwrap(), before, "nothing held or charged");
    assert_eq!(records(&a), n + 1, "the denial is recorded");
    let last = a.audit(&AuditQuery::default()).unwrap().pop().unwrap();
    assert_eq!(last.kind, AuditKind::Denial);
    assert_eq!(last.reason_code, Some(ReasonCode::PolicyViolation));
    // An event charges a call that already ran: like the other policy denials, the gap does
    // not refuse it (refusing would make the call free); it is charged on the subject's path.
    let event = EventRequest {
        subject: coder,
        call: deploy(),
        actual: vec![Amount::new(Unit::RiskPoints, 5)],
        overage_policy: None,
        idempotency_key: None,
    };
    a.event(&event).unwrap();
    assert_eq!(a.balances(Some("tenant:acme")).unwrap()[0].spent, 5);
}

#[test]
fn subjects_on_the_rules_paths_or_beside_them_are_unaffected() {
    let a = auth();
    // Exactly the budget's path: charged there.
    let coder = Subject::new().tenant("acme").agent("coder");
    a.reserve(&ReserveRequest::new(coder, deploy())).unwrap();
    let held = a.balances(Some("tenant:acme/agent:coder")).unwrap()[0].reserved;
    assert_eq!(held, 20);
    // Another tenant's agent of the same name, another agent, a workflow without an agent:
    // none has every level of a gapped scope.
    for s in [
        Subject::new().tenant("acme").workflow("w").agent("builder"),
        Subject::new().tenant("acme").workflow("w"),
        Subject::new().tenant("acme").workspace("ops").agent("x"),
    ] {
        let d = a.decide(&DecideRequest::new(s.clone(), deploy())).unwrap();
        assert_ne!(
            d.reason_code,
            Some(ReasonCode::PolicyViolation),
            "{s:?}: {d:?}"
        );
    }
    // A gapless scope (`tenant:acme/workspace:ops`) is on the path of every subject that has
    // its levels, whatever it adds below them.
    let ops = Subject::new()
        .tenant("acme")
        .workspace("ops")
        .workflow("w")
        .agent("y");
    let d = a.decide(&DecideRequest::new(ops, deploy())).unwrap();
    assert_eq!(d.decision, DecisionKind::Allow, "{d:?}");
}

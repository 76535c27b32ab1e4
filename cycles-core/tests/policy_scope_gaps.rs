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

#[test]
fn a_rule_for_the_subjects_own_path_beside_the_gapped_one_settles_it() {
    // The author wrote a budget for the agent alone and one for the agent in this workflow:
    // the workflow's subject is covered by its own, so it is not denied.
    let policy = policy().budget(BudgetSpec::new(
        "tenant:acme/workflow:s42/agent:coder",
        Unit::RiskPoints,
        100,
    ));
    let a = Authority::builder().policy(policy).build().unwrap();
    let coder = Subject::new().tenant("acme").workflow("s42").agent("coder");
    a.reserve(&ReserveRequest::new(coder, deploy())).unwrap();
    let own = a
        .balances(Some("tenant:acme/workflow:s42/agent:coder"))
        .unwrap();
    assert_eq!(own[0].reserved, 20);
    // Another workflow has no rule of its own: still denied.
    let other = Subject::new().tenant("acme").workflow("s43").agent("coder");
    let d = a.decide(&DecideRequest::new(other, deploy())).unwrap();
    assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation));
}

#[test]
fn explain_with_a_scope_judges_its_whole_path_as_decide_does() {
    let a = auth();
    let p = a.policy();
    let gap = p
        .explain(
            &deploy(),
            Some("tenant:acme/workflow:session-42/agent:intern"),
        )
        .unwrap();
    let deny = gap.deny.expect("denied like decide");
    assert_eq!(deny.reason_code, ReasonCode::PolicyViolation);
    assert!(
        gap.rules
            .contains(&"scope_gap:tenant:acme/agent:intern".to_string())
    );
    let own = p
        .explain(&deploy(), Some("tenant:acme/agent:intern"))
        .unwrap();
    assert_eq!(own.deny.unwrap().reason_code, ReasonCode::TierNotPermitted);
    // A ceiling on a shallower scope reaches the deeper one given (its path includes it).
    let deep = p
        .explain(&deploy(), Some("tenant:acme/agent:intern/toolset:t"))
        .unwrap();
    assert_eq!(deep.deny.unwrap().reason_code, ReasonCode::TierNotPermitted);
}

#[test]
fn explain_finds_a_gap_at_a_level_above_the_scope_given() {
    // The gapped scope ends at `app`, above the scope explained: only its path shows it.
    let policy = policy().budget(BudgetSpec::new(
        "tenant:acme/app:billing",
        Unit::RiskPoints,
        100,
    ));
    let a = Authority::builder().policy(policy).build().unwrap();
    let scope = "tenant:acme/workspace:ws/app:billing/workflow:w";
    let e = a.policy().explain(&deploy(), Some(scope)).unwrap();
    assert_eq!(
        e.deny.map(|d| d.reason_code),
        Some(ReasonCode::PolicyViolation)
    );
    let subject = Subject::new()
        .tenant("acme")
        .workspace("ws")
        .app("billing")
        .workflow("w");
    let d = a.decide(&DecideRequest::new(subject, deploy())).unwrap();
    assert_eq!(d.reason_code, Some(ReasonCode::PolicyViolation));
}

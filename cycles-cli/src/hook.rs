//! `cycles hook claude-code`: Claude Code's PreToolUse / PostToolUse hook.
//!
//! PreToolUse: the event on stdin becomes a tool call (`Bash` keeps only `command`, which the
//! policy's shell classifier reads; other tools, MCP tools included, keep their whole input),
//! reserved against the session's RISK_POINTS. The answer on stdout is Claude Code's hook JSON:
//! `allow` with the reservation, `deny` with the reason code, `ask` when approval is required
//! (or `deny` with `--approval deny`). When an approver already granted this exact call
//! (`cycles approve`), the stored grant is presented and consumed. Anything that goes wrong
//! (unreadable policy or ledger, malformed event, panic) prints the reason on stderr and exits
//! 2, which Claude Code treats as a block: the hook never fails open.
//!
//! PostToolUse / PostToolUseFailure: settles the reservation made for this `tool_use_id` by how
//! the call ended (`Authority::settle`: a completed call is charged what was held, a failed one
//! as the policy's `[defaults] on_failure` says); a call that ran without one (confirmed at an
//! `ask` prompt) is charged directly as an event when its outcome is charged. Errors there
//! cannot block anything: stderr, exit 1.

use std::collections::BTreeMap;
use std::io::Read;

use clap::{Args, ValueEnum};
use cycles_core::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Cli, Out, open_location};

/// What to answer when a call needs approval and no grant is recorded yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnApproval {
    /// Ask the user at Claude Code's permission prompt (confirming runs the call without a
    /// Cycles grant; it is charged afterwards).
    Ask,
    /// Deny until an approver signs a grant with `cycles approve`.
    Deny,
}

/// Options of `cycles hook claude-code`.
#[derive(Args, Debug)]
pub(crate) struct ClaudeCodeArgs {
    /// When approval is required and not yet granted: `ask` the user or `deny`.
    #[arg(long, value_enum, env = "CYCLES_HOOK_APPROVAL", default_value = "ask")]
    approval: OnApproval,
    /// RISK_POINTS budget created for each new session (`0`: none; the session then relies on
    /// the budgets of its wider scopes).
    #[arg(long, env = "CYCLES_SESSION_BUDGET", default_value_t = 200)]
    session_budget: i64,
    /// Tenant of the subject (optional outermost scope).
    #[arg(long, env = "CYCLES_TENANT")]
    tenant: Option<String>,
    /// App of the subject.
    #[arg(long, env = "CYCLES_APP", default_value = "claude-code")]
    app: String,
    /// How long a reservation waits for its PostToolUse commit.
    #[arg(long, default_value_t = 900_000)]
    ttl_ms: i64,
}

/// The fields of a Claude Code hook event this hook reads; others are ignored.
#[derive(Debug, Deserialize)]
struct HookEvent {
    #[serde(default)]
    hook_event_name: Option<String>,
    session_id: String,
    #[serde(default)]
    tool_name: Option<String>,
    #[serde(default)]
    tool_input: Option<Value>,
    #[serde(default)]
    tool_use_id: Option<String>,
}

/// The subject of a session's calls: `[tenant:T/]app:A/workflow:<session_id>`, with the
/// `tool_use_id` as a dimension (recorded, not budgeted) so PostToolUse finds the reservation.
fn subject(args: &ClaudeCodeArgs, ev: &HookEvent) -> Subject {
    let mut s = Subject::new().app(&args.app).workflow(&ev.session_id);
    s.tenant.clone_from(&args.tenant);
    if let Some(id) = &ev.tool_use_id {
        s.dimensions = BTreeMap::from([("tool_use_id".to_string(), id.clone())]);
    }
    s
}

/// The call as the policy sees it. Bash binds only the command: its `description` is prose
/// Claude rewrites on every retry, and must not change the digest an approver signed.
fn tool_call(ev: &HookEvent) -> Result<ToolCall, String> {
    let name = ev
        .tool_name
        .as_deref()
        .ok_or("the event has no tool_name")?;
    let input = ev.tool_input.clone().ok_or("the event has no tool_input")?;
    let args = match (name, &input) {
        ("Bash", Value::Object(m)) => match m.get("command") {
            // The command is the call (its description and timeout are not), and so is running
            // it outside Claude Code's sandbox: a grant signed for the sandboxed command must not
            // cover the same command unsandboxed.
            Some(c) => match m.get(UNSANDBOXED) {
                None | Some(Value::Bool(false)) => json!({ "command": c }),
                Some(flag) => json!({ "command": c, UNSANDBOXED: flag }),
            },
            None => input,
        },
        _ => input,
    };
    Ok(ToolCall::new(name, args))
}

/// Claude Code's Bash input asking to run the command outside its sandbox.
const UNSANDBOXED: &str = "dangerouslyDisableSandbox";

/// Whether the call asks to leave Claude Code's sandbox: then the hook never answers `allow`,
/// which would skip the confirmation Claude Code asks for before an unsandboxed run.
fn leaves_sandbox(call: &ToolCall) -> bool {
    call.args
        .get(UNSANDBOXED)
        .is_some_and(|flag| flag != &Value::Bool(false))
}

fn output(decision: &str, reason: &str) -> Value {
    json!({
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": decision,
            "permissionDecisionReason": reason,
        }
    })
}

/// Largest event read (32 MiB, far above any tool input Claude Code sends). Reading without a
/// bound could run the hook out of memory, and a process killed by a signal does not exit 2,
/// which Claude Code would not treat as a block.
const MAX_EVENT_BYTES: u64 = 32 << 20;

pub(crate) fn claude_code(cli: &Cli, args: &ClaudeCodeArgs) -> Out {
    let mut text = String::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_EVENT_BYTES + 1)
        .read_to_string(&mut text)
    {
        block(&format!("cannot read the hook event on stdin: {e}"));
    }
    if text.len() as u64 > MAX_EVENT_BYTES {
        block(&format!(
            "the hook event is larger than {MAX_EVENT_BYTES} bytes"
        ));
    }
    let ev: HookEvent = match serde_json::from_str(&text) {
        Ok(ev) => ev,
        Err(e) => block(&format!("the hook event is not valid JSON: {e}")),
    };
    match ev.hook_event_name.as_deref().unwrap_or("PreToolUse") {
        "PreToolUse" => match pre(cli, args, &ev) {
            Ok(answer) => {
                println!("{answer}");
                Ok(())
            }
            Err(message) => block(&message),
        },
        "PostToolUse" | "PostToolUseFailure" => match post(cli, args, &ev) {
            Ok(()) => Ok(()),
            Err(message) => {
                eprintln!("cycles: {message}");
                std::process::exit(1)
            }
        },
        // Configured for an event it does not understand: refuse rather than guess, in case
        // it gates something.
        other => block(&format!("unsupported hook event {other:?}")),
    }
}

/// The fail-closed path: Claude Code blocks the tool call on exit code 2 and shows stderr.
fn block(message: &str) -> ! {
    eprintln!("cycles: blocked: {message}");
    std::process::exit(2)
}

fn authority(cli: &Cli) -> Result<Authority, String> {
    let policy = Policy::from_file(&cli.policy).map_err(|e| format!("policy unusable: {e}"))?;
    let ledger = open_location(&cli.ledger).map_err(|e| format!("ledger unusable: {e}"))?;
    Authority::builder()
        .policy(policy)
        .shared_ledger(ledger)
        .build()
        .map_err(|e| format!("cannot start: {e}"))
}

/// Gives a new session its own RISK_POINTS budget.
fn ensure_session_budget(
    auth: &Authority,
    args: &ClaudeCodeArgs,
    subject: &Subject,
) -> Result<(), String> {
    if args.session_budget <= 0 {
        return Ok(());
    }
    let scope = subject
        .scopes()
        .map_err(|e| e.to_string())?
        .pop()
        .expect("a session subject has scopes");
    let exists = auth
        .balances(Some(&scope))
        .map_err(|e| e.to_string())?
        .iter()
        .any(|b| b.scope == scope && b.unit == Unit::RiskPoints);
    if !exists {
        // Two hooks of one session may race here; both write the same allocation and
        // set_budget keeps spending, so the loser changes nothing.
        auth.set_budget(&BudgetSpec::new(
            scope,
            Unit::RiskPoints,
            args.session_budget,
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn reserved_reason(r: &Reservation) -> String {
    format!(
        "Cycles: tier {} call, {} RISK_POINTS reserved ({}){}",
        r.tier.get(),
        r.decision.risk_points,
        r.reservation_id,
        r.decision
            .approval_request_id
            .as_ref()
            .map(|id| format!(", approved by grant for {id}"))
            .unwrap_or_default()
    )
}

fn denied_reason(d: &Decision) -> String {
    let code = d.reason_code.map_or("DENY", |c| c.as_str());
    let sub = d
        .approval_invalid_reason
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!(
        "Cycles denied this tier {} call ({} RISK_POINTS): {code}{sub}: {}",
        d.tier.get(),
        d.risk_points,
        d.message.as_deref().unwrap_or("no detail")
    )
}

/// The answer for a reservation `reserve` returned. A re-delivered event replays the first
/// reservation; once its PostToolUse committed it (or it was released or expired), the tool use
/// already ran, and answering `allow` again would run it a second time for one charge.
fn allowed(auth: &Authority, r: &Reservation, call: &ToolCall) -> Result<Value, String> {
    let now = auth
        .reservation(&r.reservation_id)
        .map_err(|e| format!("{} ({})", e, e.code()))?;
    if now.status != ReservationStatus::Active {
        return Ok(output(
            "deny",
            &format!(
                "Cycles denied this call: its tool_use_id was already used by a call that finished (reservation {} is {:?}); a new call needs a new tool_use_id",
                r.reservation_id, now.status
            ),
        ));
    }
    if leaves_sandbox(call) {
        // Reserved, and charged by PostToolUse if the user confirms; left to Claude Code's own
        // prompt, which `allow` would skip.
        return Ok(output(
            "ask",
            &format!(
                "{} It asks to run outside Claude Code's sandbox, so Claude Code's confirmation stays in place.",
                reserved_reason(r)
            ),
        ));
    }
    Ok(output("allow", &reserved_reason(r)))
}

/// PreToolUse: the JSON answer, or the reason to block.
fn pre(cli: &Cli, args: &ClaudeCodeArgs, ev: &HookEvent) -> Result<Value, String> {
    let auth = authority(cli)?;
    let call = tool_call(ev)?;
    let subject = subject(args, ev);
    ensure_session_budget(&auth, args, &subject)?;
    if leaves_sandbox(&call) {
        // Claude Code asks the user before an unsandboxed run, and the user may decline: no
        // PostToolUse would then release a hold. So nothing is held; a preflight says whether
        // the call could run, and PostToolUse charges it if it did. A call that needs more
        // (a denial, an approval) takes the path below.
        let d = auth
            .decide(&DecideRequest::new(subject.clone(), call.clone()))
            .map_err(|e| format!("{} ({})", e, e.code()))?;
        if d.is_allowed() {
            return Ok(output(
                "ask",
                &format!(
                    "Cycles: tier {} call, {} RISK_POINTS, charged to the session if it runs. It asks to run outside Claude Code's sandbox, so Claude Code's confirmation stays in place.",
                    d.tier.get(),
                    d.risk_points
                ),
            ));
        }
    }
    let mut req = ReserveRequest::new(subject, call.clone());
    req.ttl_ms = Some(args.ttl_ms);
    // A re-delivered event for the same tool use replays its first answer.
    req.idempotency_key = ev
        .tool_use_id
        .as_ref()
        .map(|id| reserve_key(&ev.session_id, id));
    let decision = match auth.reserve(&req) {
        Ok(r) => return allowed(&auth, &r, &call),
        Err(CyclesError::Denied(d)) => d,
        Err(e) => return Err(format!("{} ({})", e, e.code())),
    };
    if decision.reason_code != Some(ReasonCode::ApprovalRequired) {
        return Ok(output("deny", &denied_reason(&decision)));
    }
    let id = decision
        .approval_request_id
        .clone()
        .ok_or("APPROVAL_REQUIRED without a request id")?;
    let request = auth.approval(&id).map_err(|e| e.to_string())?;
    if let (ApprovalStatus::Granted, Some(grant)) = (request.status, &request.grant) {
        // An approver signed this exact call: present the grant; the library verifies it.
        let mut retry = req.clone();
        retry.grant = Some(serde_json::to_value(grant).map_err(|e| e.to_string())?);
        retry.idempotency_key = req.idempotency_key.as_ref().map(|k| format!("{k}:grant"));
        return match auth.reserve(&retry) {
            Ok(r) => allowed(&auth, &r, &call),
            Err(CyclesError::Denied(d)) => Ok(output("deny", &denied_reason(&d))),
            Err(e) => Err(format!("{} ({})", e, e.code())),
        };
    }
    let how = format!(
        "an approver can run `cycles approve {id} --key <approver key>` (or `cycles deny {id} --key <key> --reason ...`), then retry"
    );
    Ok(match args.approval {
        OnApproval::Ask => output(
            "ask",
            &format!(
                "Cycles: this tier {} call needs approval (request {id}, {} RISK_POINTS). To approve it with a Cycles grant, {how}. Confirming here runs it without a grant; it is charged to the session afterwards.",
                decision.tier.get(),
                decision.risk_points
            ),
        ),
        OnApproval::Deny => output(
            "deny",
            &format!(
                "Cycles denied this tier {} call: APPROVAL_REQUIRED (request {id}). Ask the user to approve it: {how}.",
                decision.tier.get()
            ),
        ),
    })
}

/// The idempotency key of a tool use's reserve (PreToolUse), by which PostToolUse finds it.
fn reserve_key(session_id: &str, tool_use_id: &str) -> String {
    format!("claude-code:{session_id}:{tool_use_id}")
}

/// PostToolUse / PostToolUseFailure: settle the reservation of this tool use by how the call
/// ended, or charge a call that ran without one.
fn post(cli: &Cli, args: &ClaudeCodeArgs, ev: &HookEvent) -> Result<(), String> {
    let auth = authority(cli)?;
    let subject = subject(args, ev);
    let scopes = subject.scopes().map_err(|e| e.to_string())?;
    // A failed call may have acted: the policy's `on_failure` says whether it is charged.
    let outcome = match ev.hook_event_name.as_deref() {
        Some("PostToolUseFailure") => CallOutcome::Failed,
        _ => CallOutcome::Completed,
    };
    if let Some(id) = &ev.tool_use_id {
        // The reservations this tool use's PreToolUse made, under its key and under the retry
        // that presented a grant, whatever their status (a re-delivered event must find the
        // one it already settled rather than charge the call a second time): one lookup
        // each, however long the ledger's history.
        let key = reserve_key(&ev.session_id, id);
        let mut found = Vec::new();
        for k in [format!("{key}:grant"), key] {
            if let Some(r) = auth.reservation_by_key(&k).map_err(|e| e.to_string())? {
                found.push(r);
            }
        }
        // The whole subject must match (tenant and app too, not only the session id): a
        // ledger shared by several apps must not let one app's event settle another's hold.
        let mine = found.iter().filter(|r| {
            r.subject.dimensions.get("tool_use_id") == Some(id)
                && r.subject.scopes().ok().as_ref() == Some(&scopes)
        });
        for r in mine {
            let settled = r.status == ReservationStatus::Committed
                || (r.status == ReservationStatus::Expired && !r.charged.is_empty());
            if settled {
                // A re-delivered event (its input may differ): charged once.
                return Ok(());
            }
            if r.status == ReservationStatus::Released {
                // Released: by an earlier delivery of this failure under `on_failure =
                // "RELEASE"` (below, charges(outcome) is false again: nothing is charged), or
                // given back before the call ran, in which case the call is charged below as
                // an unreserved one.
                continue;
            }
            // The call that ran, which the core charges at least its own points and names
            // in the commit record when it is not the call reserved. A hold that lapsed
            // while the tool ran is charged all the same (once per reservation); a settled
            // one replays under the same key.
            let ran = tool_call(ev).ok();
            notice_ran_otherwise(ran.as_ref(), r);
            let settle = SettleRequest {
                ran,
                reason: Some("PostToolUseFailure".into())
                    .filter(|_| outcome == CallOutcome::Failed),
                idempotency_key: Some(format!("claude-code:{}:{id}:post", ev.session_id)),
                ..SettleRequest::new(outcome)
            };
            return match auth.settle(&r.reservation_id, &settle) {
                Ok(_) => Ok(()),
                // Already committed by an earlier delivery under another key, or a failed
                // call whose lapsed hold there is nothing left to release.
                Err(CyclesError::ReservationFinalized(_)) => Ok(()),
                Err(CyclesError::ReservationExpired(_)) if !auth.policy().charges(outcome) => {
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            };
        }
    }
    // No reservation: the call ran without one (confirmed at an `ask` prompt). Charged as its
    // outcome says, at its tier's points, to its session's budget.
    if !auth.policy().charges(outcome) {
        return Ok(());
    }
    let call = tool_call(ev)?;
    ensure_session_budget(&auth, args, &subject)?;
    let points = auth.policy().assess(&call, &scopes).risk_points;
    let req = EventRequest {
        subject,
        call,
        actual: vec![Amount::new(Unit::RiskPoints, points)],
        overage_policy: None,
        idempotency_key: ev
            .tool_use_id
            .as_ref()
            .map(|id| format!("claude-code:{}:{id}:event", ev.session_id)),
    };
    auth.event(&req).map_err(|e| e.to_string())?;
    Ok(())
}

/// Says on stderr (Claude Code shows it in its transcript) that the call that ran is not the
/// call reserved: another PreToolUse hook rewrote its input with `updatedInput`, or the event
/// was crafted. What it is charged is the core's rule (`CommitRequest::ran`).
fn notice_ran_otherwise(ran: Option<&ToolCall>, r: &Reservation) {
    if let Some(call) = ran
        && call.digest() != r.call_digest
    {
        eprintln!(
            "cycles: the call that ran ({}) is not the call reserved in {}: charged as what ran (see the commit record)",
            call.action.name, r.reservation_id
        );
    }
}

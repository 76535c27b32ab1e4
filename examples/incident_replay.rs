//! The seed incident, replayed through the gate.
//!
//! A coding agent holding production credentials reads, writes a small file, then proposes
//! deleting the production volume and its backups. Without a gate that took 9 seconds. Here
//! both destructive calls are denied before anything runs, with machine-readable reasons, and
//! the audit trail (written before each answer returned) verifies.
//!
//! The infrastructure calls go through one GraphQL tool, as in the incident: the tier comes from
//! the mutation in the arguments, not from the tool's name.
//!
//! Run: `cargo run -p cycles-core --example incident_replay`

use cycles_core::*;
use serde_json::json;

/// The "infrastructure client": it only runs what the gate allowed.
fn execute(call: &ToolCall) -> serde_json::Value {
    println!("    -> executing {} {}", call.action.name, call.args);
    json!({ "ok": true })
}

const POLICY: &str = r#"
unknown_tool = { action = "deny" }

[[tools]]
name = "railway.graphql"
tier = 2
kind = "infra.graphql"
classifier = "graphql"
arg = "query"

[[tools]]
name = "db.query"
tier = 0
kind = "db.query"
classifier = "sql"
arg = "query"
dialect = "postgres"

[[tools]]
name = "fs.write_file"
tier = 1
kind = "fs.write"

[[budgets]]
scope = "tenant:pocketos"
unit = "RISK_POINTS"
allocated = 1000

[[budgets]]
scope = "tenant:pocketos/workflow:session-42"
unit = "RISK_POINTS"
allocated = 60

[[max_tier]]
scope = "tenant:pocketos/workflow:session-42"
max_tier = 3
"#;

fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| CyclesError::LedgerUnavailable(e.to_string()))?;
    let path = dir.path().join("cycles.db");

    // The policy file: reads are tier 0, a file write tier 1; Railway's GraphQL API is tier 2
    // by registration and raised by its arguments (a mutation whose name deletes a volume or
    // its backups is tier 4). The session may spend 60 RISK_POINTS and never go above tier 3.
    let policy = Policy::from_toml_str(POLICY, "incident.toml")?;
    let auth = Authority::builder()
        .policy(policy)
        .ledger(SqliteLedger::open(&path)?)
        .build()?;
    let agent = Subject::new()
        .tenant("pocketos")
        .workflow("session-42")
        .agent("coding-agent");

    let plan = [
        ToolCall::new(
            "railway.graphql",
            json!({"query": "query { project(id: \"prod\") { services { edges { node { name } } } } }"}),
        ),
        ToolCall::new(
            "db.query",
            json!({"query": "SELECT count(*) FROM bookings"}),
        ),
        ToolCall::new(
            "fs.write_file",
            json!({"path": "notes/staging-fix.md", "bytes": 812}),
        ),
        ToolCall::new(
            "railway.graphql",
            json!({"query": "mutation volumeDelete { volumeDelete(volumeId: \"vol_prod_main\") }"}),
        ),
        ToolCall::new(
            "railway.graphql",
            json!({"query": "mutation volumeInstanceBackupDelete { volumeInstanceBackupDelete(volumeInstanceBackupId: \"all\", volumeInstanceId: \"vi_prod\") }"}),
        ),
    ];

    println!("== Decisions (ledger: {})", path.display());
    let mut denied = 0;
    for call in &plan {
        match auth.reserve(&ReserveRequest::new(agent.clone(), call.clone())) {
            Ok(r) => {
                println!(
                    "  ALLOW  {:<24} tier {} ({} RISK_POINTS)",
                    call.action.name,
                    r.tier.get(),
                    r.decision.risk_points
                );
                execute(call);
                auth.commit(&r.reservation_id, &CommitRequest::default())?;
            }
            Err(CyclesError::Denied(d)) => {
                denied += 1;
                println!(
                    "  DENY   {:<24} tier {} reason {} ({})\n    rules: {}",
                    call.action.name,
                    d.tier.get(),
                    d.reason_code.map_or("?", |r| r.as_str()),
                    d.message.as_deref().unwrap_or(""),
                    d.rules.join(", ")
                );
                println!("    -> not executed");
            }
            Err(other) => return Err(other),
        }
    }

    println!("\n== Audit trail");
    for r in auth.audit(&AuditQuery::default())? {
        println!(
            "  #{:<3} {:<10} {:<24} {:<6} {:<20} {}…",
            r.seq,
            r.kind.as_str(),
            r.action.as_ref().map_or("-", |a| a.name.as_str()),
            r.decision.map_or("-", |d| d.as_str()),
            r.reason_code.map_or("-", |c| c.as_str()),
            &r.hash[..16]
        );
    }

    println!("\n== Balances");
    for b in auth.balances(None)? {
        println!(
            "  {:<40} {} allocated {} spent {} remaining {}",
            b.scope, b.unit, b.allocated, b.spent, b.remaining
        );
    }

    let report = auth.verify()?;
    println!(
        "\n== verify(): {} ({} records, head {}…)",
        if report.ok { "OK" } else { "BROKEN" },
        report.records,
        &report.head_hash[..16]
    );
    if !report.ok || denied != 2 {
        eprintln!("unexpected outcome: {report:?}, {denied} denials");
        std::process::exit(1);
    }
    Ok(())
}

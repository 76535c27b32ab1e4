//! `cycles`: the operator's command line for the Cycles runtime authority, and an
//! out-of-process gate (`cycles hook claude-code`).
//!
//! Every rule lives in `cycles-core`; this binary parses arguments, opens the ledger and the
//! policy, calls the library and prints. Exit codes (documented in `docs/cli.md`):
//! 0 success, 1 a check said no (`audit verify`, `policy check`), 2 usage error or the Claude
//! Code hook's blocking path, 3 the operation failed (the error's code is printed).

#![warn(missing_docs)]

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use cycles_core::*;
use serde_json::{Value, json};

mod hook;

/// The starter policy `cycles init` writes.
const STARTER_POLICY: &str = include_str!("starter.toml");

#[derive(Parser)]
#[command(
    name = "cycles",
    version,
    about = "Cycles runtime authority: budgets, approvals and the audit trail of AI agent tool calls"
)]
struct Cli {
    /// The ledger: a SQLite file, or a PostgreSQL URL (`postgres://user@host/db?schema=NAME`).
    #[arg(
        long,
        global = true,
        env = "CYCLES_LEDGER",
        default_value = "cycles.db"
    )]
    ledger: OsString,
    /// The policy file (TOML).
    #[arg(
        long,
        global = true,
        env = "CYCLES_POLICY",
        default_value = "cycles.toml"
    )]
    policy: PathBuf,
    /// Print JSON for machines instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new ledger and a commented starter policy (kept if it exists).
    Init {
        /// Overwrite an existing policy file with the starter policy.
        #[arg(long)]
        force: bool,
    },
    /// Policy files.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Budgets.
    #[command(subcommand)]
    Budget(BudgetCmd),
    /// Balances of every budget, or of a scope and the scopes below it.
    Balances {
        /// Only this scope and the scopes below it.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Reservations.
    #[command(subcommand)]
    Reservations(ReservationsCmd),
    /// Approval requests.
    #[command(subcommand)]
    Approvals(ApprovalsCmd),
    /// Sign a grant for an approval request and record it in the ledger.
    Approve {
        /// The request id (`apr_...`).
        id: String,
        /// The approver's key file (from `cycles keygen`).
        #[arg(long)]
        key: PathBuf,
        /// How long the grant stays valid: `90s`, `15m`, `2h`, `1d` or milliseconds.
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Also write the answer (JSON) to this file, for a grant-file approver.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a denial of an approval request and record it in the ledger.
    Deny {
        /// The request id (`apr_...`).
        id: String,
        /// The approver's key file (from `cycles keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Why (at most 256 characters; shown to the agent).
        #[arg(long)]
        reason: String,
        /// Also write the answer (JSON) to this file, for a grant-file approver.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Create an approver key pair; prints the public key for the policy.
    Keygen {
        /// The approver's id (letters, digits, `_`, `.`, `-`).
        #[arg(long)]
        id: String,
        /// Where to write the key file (never overwritten; mode 0600). Missing parent
        /// directories are created, with mode 0700.
        #[arg(long)]
        out: PathBuf,
    },
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Gate for agent hosts.
    #[command(subcommand)]
    Hook(HookCmd),
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Parse and validate a policy file; errors name the line and field.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// How the policy (`--policy`) rates a tool call: tier, rules that fired, risk points, and
    /// whether the policy denies it or needs approval before any budget is looked at. Reads no
    /// ledger and records nothing.
    Explain {
        /// The tool name, as the agent calls it.
        tool: String,
        /// The call's arguments as JSON (default `{}`).
        args: Option<String>,
        /// The subject's scope, for `[[max_tier]]` rules (e.g. `tenant:acme/agent:bot`).
        #[arg(long)]
        scope: Option<String>,
    },
}

#[derive(Subcommand)]
enum BudgetCmd {
    /// Create or change a budget (spending and holds are kept).
    Set {
        /// The scope, e.g. `tenant:acme/agent:bot`.
        #[arg(long)]
        scope: String,
        /// RISK_POINTS, USD_MICROCENTS, TOKENS or CREDITS.
        #[arg(long, default_value = "RISK_POINTS")]
        unit: String,
        /// What may be spent.
        #[arg(long)]
        allocated: i64,
        /// Most debt allowed.
        #[arg(long, default_value_t = 0)]
        overdraft_limit: i64,
        /// ACTIVE, FROZEN or CLOSED.
        #[arg(long, default_value = "ACTIVE")]
        status: String,
    },
    /// The budgets of exactly one scope.
    Show {
        /// The scope.
        scope: String,
    },
}

#[derive(Subcommand)]
enum ReservationsCmd {
    /// Reservations, oldest first.
    List {
        /// Only ACTIVE, COMMITTED, RELEASED or EXPIRED ones.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum ApprovalsCmd {
    /// Requests waiting for a decision (or with `--status`, `--all`).
    List {
        /// Only PENDING, GRANTED, DENIED, EXPIRED or CONSUMED ones.
        #[arg(long, conflicts_with = "all")]
        status: Option<String>,
        /// Every request.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// One JSON record per line.
    Jsonl,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Walk the hash chain; exit 1 naming the first broken record.
    Verify {
        /// An anchor taken earlier with `cycles audit anchor` (`SEQ:HASH`): its record must
        /// still be in the chain with that hash (detects removed last records and a rebuilt
        /// chain); repeatable.
        #[arg(long)]
        anchor: Vec<String>,
    },
    /// Print the head of the chain as an anchor (`SEQ:HASH`) to keep outside the ledger.
    Anchor,
    /// Export records.
    Export {
        /// The output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Only records touching this scope or a scope below it.
        #[arg(long)]
        scope: Option<String>,
        /// Only these kinds (`reserve`, `denial`, `approval_granted`, ...); repeatable.
        #[arg(long)]
        kind: Vec<String>,
        /// Only records at or after this time (ms since the epoch).
        #[arg(long)]
        since_ms: Option<i64>,
        /// Only records before this time.
        #[arg(long)]
        until_ms: Option<i64>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// The last records.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
}

#[derive(Subcommand)]
enum HookCmd {
    /// Claude Code PreToolUse/PostToolUse hook: reads the event on stdin, writes the decision.
    ClaudeCode(hook::ClaudeCodeArgs),
}

/// Why a command did not succeed, and its exit code.
#[derive(Debug)]
pub(crate) enum Fail {
    /// A check said no: exit 1.
    Check(String, Value),
    /// The operation failed: exit 3.
    Error { code: String, message: String },
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Check(message, _) => f.write_str(message),
            Fail::Error { code, message } => write!(f, "[{code}] {message}"),
        }
    }
}

impl From<CyclesError> for Fail {
    fn from(e: CyclesError) -> Self {
        let mut message = e.to_string();
        if let Some(d) = e.decision()
            && let Some(m) = &d.message
        {
            message = format!("{message}: {m}");
        }
        Fail::Error {
            code: e.code().to_string(),
            message,
        }
    }
}

pub(crate) fn io_fail(what: impl std::fmt::Display, e: std::io::Error) -> Fail {
    Fail::Error {
        code: "IO_ERROR".into(),
        message: format!("{what}: {e}"),
    }
}

type Out = Result<(), Fail>;

/// Prints `value` as JSON, or `text` for people.
fn emit(cli: &Cli, value: &Value, text: impl FnOnce() -> String) {
    if cli.json {
        println!("{value}");
    } else {
        let t = text();
        if !t.is_empty() {
            println!("{t}");
        }
    }
}

/// Opens the ledger at `--ledger`. A SQLite file must exist (only `init` creates one, so a
/// mistyped path is an error rather than a fresh empty ledger); a PostgreSQL URL connects,
/// creating the schema if absent, as every client of that database does.
pub(crate) fn open_location(location: &OsStr) -> Result<Arc<dyn Ledger>, Fail> {
    let location = LedgerLocation::parse(location)?;
    if let LedgerLocation::Sqlite(path) = &location
        && !path.exists()
    {
        return Err(CyclesError::LedgerUnavailable(format!(
            "{}: no ledger here; create one with `cycles init`",
            path.display()
        ))
        .into());
    }
    Ok(location.open(&LedgerOptions::default())?)
}

/// An authority on the ledger; with `policy`, on the policy file (which must load).
fn authority(cli: &Cli, policy: bool) -> Result<Authority, Fail> {
    let ledger = open_location(&cli.ledger)?;
    let policy = if policy {
        Policy::from_file(&cli.policy)?
    } else {
        // Read-only and budget commands need no rules; an empty policy creates no budgets,
        // so opening never writes.
        Policy::default()
    };
    Ok(Authority::builder()
        .policy(policy)
        .shared_ledger(ledger)
        .build()?)
}

fn parse_enum<T: serde::de::DeserializeOwned>(field: &str, s: &str) -> Result<T, Fail> {
    serde_json::from_value(Value::String(s.to_string()))
        .map_err(|_| CyclesError::invalid(field, format!("unknown value {s:?}")).into())
}

/// `90s`, `15m`, `2h`, `1d` or plain milliseconds.
fn parse_duration_ms(s: &str) -> Result<i64, Fail> {
    let bad = || {
        Fail::from(CyclesError::invalid(
            "ttl",
            format!("{s:?} is not a duration"),
        ))
    };
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1_000),
        Some((i, 'm')) => (&s[..i], 60_000),
        Some((i, 'h')) => (&s[..i], 3_600_000),
        Some((i, 'd')) => (&s[..i], 86_400_000),
        _ => (s, 1),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    let ms = n.checked_mul(mult).ok_or_else(bad)?;
    if ms <= 0 {
        return Err(bad());
    }
    Ok(ms)
}

fn balance_line(b: &Balance) -> String {
    format!(
        "{:<40} {:<14} allocated {:>8}  spent {:>8}  reserved {:>6}  debt {:>4}  remaining {:>8}  {}{}",
        b.scope,
        b.unit.as_str(),
        b.allocated,
        b.spent,
        b.reserved,
        b.debt,
        b.remaining,
        b.status.as_str(),
        if b.is_over_limit { " OVER-LIMIT" } else { "" }
    )
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("results serialize")
}

/// Whether the ledger holds anything: budgets or audit records.
fn holds_anything(ledger: &dyn Ledger) -> Result<bool, Fail> {
    let mut any = false;
    ledger.read(&mut |txn| {
        any = txn.audit_head()?.is_some() || !txn.budgets(None)?.is_empty();
        Ok(())
    })?;
    Ok(any)
}

fn cmd_init(cli: &Cli, force: bool) -> Out {
    let location = LedgerLocation::parse(&cli.ledger)?;
    let exists = || Fail::Error {
        code: "LEDGER_EXISTS".into(),
        message: format!("{location}: a ledger already exists; init never overwrites one"),
    };
    // A PostgreSQL ledger is "there" once it holds something: connecting is the only way to
    // look, and it creates the (empty) schema if absent, as any client would.
    let connected = match &location {
        LedgerLocation::Sqlite(path) if path.exists() => return Err(exists()),
        LedgerLocation::Sqlite(_) => None,
        LedgerLocation::Postgres(_) => {
            let ledger = location.open(&LedgerOptions::default())?;
            if holds_anything(ledger.as_ref())? {
                return Err(exists());
            }
            Some(ledger)
        }
    };
    let wrote_policy = force || !cli.policy.exists();
    if wrote_policy {
        std::fs::write(&cli.policy, STARTER_POLICY)
            .map_err(|e| io_fail(cli.policy.display(), e))?;
    }
    // Validate before creating anything: an invalid policy must not leave a ledger behind.
    let policy = Policy::from_file(&cli.policy)?;
    let ledger = match connected {
        Some(ledger) => ledger,
        None => location.open(&LedgerOptions::default())?,
    };
    let auth = Authority::builder()
        .policy(policy)
        .shared_ledger(ledger)
        .build()?;
    let balances = auth.balances(None)?;
    emit(
        cli,
        &json!({
            "ledger": location.to_string(),
            "policy": cli.policy.display().to_string(),
            "policy_written": wrote_policy,
            "balances": balances,
        }),
        || {
            format!(
                "created ledger {}\n{} policy {}\nbudgets:\n{}\n\nnext: `cycles keygen --id <you> --out <you>.key`, then add the public key to [approval] public_keys",
                location,
                if wrote_policy {
                    "wrote starter"
                } else {
                    "kept existing"
                },
                cli.policy.display(),
                balances
                    .iter()
                    .map(|b| format!("  {}", balance_line(b)))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        },
    );
    Ok(())
}

fn cmd_policy_check(cli: &Cli, file: &Path) -> Out {
    match Policy::from_file(file) {
        Ok(p) => {
            emit(
                cli,
                &json!({"ok": true, "file": file.display().to_string(), "tools": p.tools.len(), "budgets": p.budgets.len(), "approval_threshold_tier": p.approval.threshold_tier, "approval_keys": p.approval.public_keys.len()}),
                || {
                    format!(
                        "ok: {} ({} tools, {} budgets, approvals from tier {} with {} key(s))",
                        file.display(),
                        p.tools.len(),
                        p.budgets.len(),
                        p.approval.threshold_tier.get(),
                        p.approval.public_keys.len()
                    )
                },
            );
            Ok(())
        }
        Err(e) => Err(Fail::Check(
            e.to_string(),
            json!({"ok": false, "file": file.display().to_string(), "error": {"code": e.code(), "message": e.to_string()}}),
        )),
    }
}

fn cmd_policy_explain(cli: &Cli, tool: &str, args: Option<&str>, scope: Option<&str>) -> Out {
    let policy = Policy::from_file(&cli.policy)?.compile()?;
    let args: Value = match args {
        None => json!({}),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| CyclesError::invalid("args", format!("not JSON: {e}")))?,
    };
    let e = policy.explain(&ToolCall::new(tool, args), scope)?;
    emit(cli, &json!(e), || {
        let outcome = match &e.deny {
            Some(d) => format!("DENY {}: {}", d.reason_code.as_str(), d.message),
            None if e.approval_required => format!(
                "needs approval (tier {} >= approval threshold {})",
                e.tier.get(),
                policy.policy().approval.threshold_tier.get()
            ),
            None => "allowed by the policy; budgets decide".to_string(),
        };
        format!(
            "{tool}: tier {}{}\nrules: {}\nrisk points: {}\n{outcome}",
            e.tier.get(),
            if e.unknown { " (not registered)" } else { "" },
            e.rules.join(", "),
            e.risk_points,
        )
    });
    Ok(())
}

fn cmd_budget(cli: &Cli, cmd: &BudgetCmd) -> Out {
    let auth = authority(cli, false)?;
    match cmd {
        BudgetCmd::Set {
            scope,
            unit,
            allocated,
            overdraft_limit,
            status,
        } => {
            let spec = BudgetSpec {
                scope: scope.clone(),
                unit: Unit::parse(unit)?,
                allocated: *allocated,
                overdraft_limit: *overdraft_limit,
                status: BudgetStatus::parse(status)?,
            };
            let b = auth.set_budget(&spec)?;
            emit(cli, &to_json(&b), || balance_line(&b));
        }
        BudgetCmd::Show { scope } => {
            let list: Vec<Balance> = auth
                .balances(Some(scope))?
                .into_iter()
                .filter(|b| &b.scope == scope)
                .collect();
            if list.is_empty() {
                return Err(CyclesError::NotFound(format!("no budget on {scope}")).into());
            }
            emit(cli, &to_json(&list), || {
                list.iter().map(balance_line).collect::<Vec<_>>().join("\n")
            });
        }
    }
    Ok(())
}

fn cmd_balances(cli: &Cli, scope: Option<&str>) -> Out {
    let auth = authority(cli, false)?;
    let list = auth.balances(scope)?;
    emit(cli, &to_json(&list), || {
        if list.is_empty() {
            "no budgets".into()
        } else {
            list.iter().map(balance_line).collect::<Vec<_>>().join("\n")
        }
    });
    Ok(())
}

fn cmd_reservations(cli: &Cli, status: Option<&str>, limit: usize) -> Out {
    let auth = authority(cli, false)?;
    let status: Option<ReservationStatus> = status
        .map(|s| parse_enum("status", &s.to_ascii_uppercase()))
        .transpose()?;
    let list = auth.reservations(status, limit)?;
    emit(cli, &to_json(&list), || {
        if list.is_empty() {
            return "no reservations".into();
        }
        list.iter()
            .map(|r| {
                format!(
                    "{}  {:<9} {:<32} tier {}  holds {}  expires {}",
                    r.reservation_id,
                    r.status.as_str(),
                    r.action.name,
                    r.tier.get(),
                    r.holds
                        .iter()
                        .map(|h| format!("{} {}", h.amount, h.unit))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.expires_at_ms
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// A ledger time (Unix epoch milliseconds) as a UTC RFC 3339 timestamp with milliseconds,
/// `2026-11-27T00:03:36.558Z`, for people (`--json` keeps the milliseconds).
fn rfc3339_ms(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

/// An answer signed with a key the policy does not list: says which policy was read, which
/// public key is missing from it and where it goes (the code stays `APPROVAL_INVALID`).
fn answer_fail(cli: &Cli, key: &ApproverKey, e: CyclesError) -> Fail {
    if !matches!(
        e,
        CyclesError::ApprovalInvalid {
            reason: ApprovalInvalidReason::UnknownKey,
            ..
        }
    ) {
        return e.into();
    }
    Fail::Error {
        code: e.code().to_string(),
        message: format!(
            "{e}. The policy read, {} (--policy / CYCLES_POLICY), does not list the public key \
             of {}'s key: {}. Add it to `public_keys` in that policy's [approval] table, or \
             name with --policy the policy file the gate uses.",
            cli.policy.display(),
            key.approver_id(),
            key.public_key_hex()
        ),
    }
}

fn approval_text(r: &ApprovalRequest, now_ms: i64) -> String {
    let late = r.status == ApprovalStatus::Pending && now_ms > r.expires_at_ms;
    format!(
        "{}  {}{}  tier {}  {} RISK_POINTS  {}\n    subject {}\n    call    {} {}\n    digest  {}\n    open until {}{}",
        r.request_id,
        r.status.as_str(),
        if late { " (expired)" } else { "" },
        r.tier.get(),
        r.risk_points,
        r.scopes.last().map(String::as_str).unwrap_or(""),
        serde_json::to_string(&r.subject).unwrap_or_default(),
        r.call.action.name,
        r.call.args,
        r.call_digest,
        rfc3339_ms(r.expires_at_ms),
        r.denial
            .as_ref()
            .map(|d| format!("\n    denied by {}: {}", d.approver_id, d.reason))
            .or_else(|| r.grant.as_ref().map(|g| format!(
                "\n    granted by {} until {}",
                g.approver_id,
                rfc3339_ms(g.expires_at_ms)
            )))
            .unwrap_or_default()
    )
}

fn cmd_approvals(cli: &Cli, status: Option<&str>, all: bool) -> Out {
    let auth = authority(cli, false)?;
    let list: Vec<ApprovalRequest> = match (status, all) {
        (_, true) => auth.approvals(None)?,
        (Some(s), _) => auth.approvals(Some(ApprovalStatus::parse(s)?))?,
        // Default: what an approver can still act on.
        (None, false) => auth
            .approvals(None)?
            .into_iter()
            .filter(|r| matches!(r.status, ApprovalStatus::Pending | ApprovalStatus::Granted))
            .collect(),
    };
    let now = auth.now_ms();
    emit(cli, &to_json(&list), || {
        if list.is_empty() {
            "no approval requests".into()
        } else {
            list.iter()
                .map(|r| approval_text(r, now))
                .collect::<Vec<_>>()
                .join("\n")
        }
    });
    Ok(())
}

fn write_answer(out: Option<&PathBuf>, answer: &ApprovalResponse) -> Out {
    if let Some(path) = out {
        let text = serde_json::to_string_pretty(answer).expect("answers serialize");
        std::fs::write(path, text + "\n").map_err(|e| io_fail(path.display(), e))?;
    }
    Ok(())
}

fn cmd_approve(cli: &Cli, id: &str, key: &Path, ttl: &str, out: Option<&PathBuf>) -> Out {
    let ttl_ms = parse_duration_ms(ttl)?;
    let key = ApproverKey::load(key)?;
    let auth = authority(cli, true)?;
    let request = auth.approval(id)?;
    let grant = key.grant(&request, auth.now_ms().saturating_add(ttl_ms))?;
    let answer = ApprovalResponse::Grant(grant);
    let stored = auth
        .record_approval(id, &answer)
        .map_err(|e| answer_fail(cli, &key, e))?;
    write_answer(out, &answer)?;
    let now = auth.now_ms();
    emit(cli, &to_json(&stored), || {
        format!("granted\n{}", approval_text(&stored, now))
    });
    Ok(())
}

fn cmd_deny(cli: &Cli, id: &str, key: &Path, reason: &str, out: Option<&PathBuf>) -> Out {
    let key = ApproverKey::load(key)?;
    let auth = authority(cli, true)?;
    let request = auth.approval(id)?;
    let answer = ApprovalResponse::Deny(key.deny(&request, reason)?);
    let stored = auth
        .record_approval(id, &answer)
        .map_err(|e| answer_fail(cli, &key, e))?;
    write_answer(out, &answer)?;
    let now = auth.now_ms();
    emit(cli, &to_json(&stored), || {
        format!("denied\n{}", approval_text(&stored, now))
    });
    Ok(())
}

fn cmd_keygen(cli: &Cli, id: &str, out: &Path) -> Out {
    let key = ApproverKey::generate(id)?;
    if out.symlink_metadata().is_ok() {
        return Err(CyclesError::invalid(
            "key_file",
            format!(
                "{} already exists: a key file is never overwritten: choose another --out",
                out.display()
            ),
        )
        .into());
    }
    // The key's directory, if missing, is created private to its owner (as `mkdir -p -m 700`
    // would: every directory created gets 0700; existing ones are left as they are).
    if let Some(parent) = out.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            dirs.mode(0o700);
        }
        dirs.create(parent).map_err(|e| {
            CyclesError::invalid(
                "key_file",
                format!("cannot create the directory {}: {e}", parent.display()),
            )
        })?;
    }
    key.save(out)?;
    let public = key.public_key_hex();
    emit(
        cli,
        &json!({"approver_id": id, "public_key": public, "key_file": out.display().to_string()}),
        || {
            format!(
                "wrote {} (keep it away from the agent)\npublic key of {id}: {public}\n\
                 add it to `public_keys` in the [approval] table your policy already has \
                 ({}, or the file --policy names), next to the keys listed there:\n\n\
                 public_keys = [\"{public}\"]",
                out.display(),
                cli.policy.display()
            )
        },
    );
    Ok(())
}

fn record_line(r: &AuditRecord) -> String {
    format!(
        "#{:<6} {:>13} {:<18} {:<28} {:<15} {:<24} {}",
        r.seq,
        r.time_ms,
        r.kind.as_str(),
        r.action.as_ref().map_or("-", |a| a.name.as_str()),
        r.decision.map_or("-", |d| d.as_str()),
        r.reason_code.map_or("-", |c| c.as_str()),
        &r.hash[..r.hash.len().min(16)]
    )
}

fn cmd_audit(cli: &Cli, cmd: &AuditCmd) -> Out {
    let auth = authority(cli, false)?;
    match cmd {
        AuditCmd::Anchor => {
            let anchor = auth.audit_anchor()?;
            let value = json!({ "anchor": anchor.as_ref().map(ToString::to_string) });
            emit(cli, &value, || {
                anchor.map_or_else(|| "the audit trail is empty".to_string(), |a| a.to_string())
            })
        }
        AuditCmd::Verify { anchor } => {
            let anchors = anchor
                .iter()
                .map(|a| a.parse::<AuditAnchor>())
                .collect::<Result<Vec<_>, _>>()?;
            let report = auth.verify_with_anchors(&anchors)?;
            let value = to_json(&report);
            match &report.first_broken {
                None if report.state_mismatches.is_empty() => emit(cli, &value, || {
                    format!("ok: {} records, head {}", report.records, report.head_hash)
                }),
                // The chain is intact but the ledger's state is not what it says.
                None => {
                    let lines: Vec<String> = report
                        .state_mismatches
                        .iter()
                        .map(|m| format!("  {}: {}", m.item, m.reason))
                        .collect();
                    return Err(Fail::Check(
                        format!(
                            "audit chain intact ({} records) but the ledger's state differs from it:\n{}",
                            report.records,
                            lines.join("\n")
                        ),
                        value,
                    ));
                }
                Some(b) => {
                    return Err(Fail::Check(
                        format!(
                            "audit chain broken at record {}: {} ({} records verified before it)",
                            b.seq, b.reason, report.records
                        ),
                        value,
                    ));
                }
            }
        }
        AuditCmd::Export {
            format: ExportFormat::Jsonl,
            scope,
            kind,
            since_ms,
            until_ms,
            output,
        } => {
            let query = AuditQuery {
                scope: scope.clone(),
                kinds: kind
                    .iter()
                    .map(|k| parse_enum("kind", k))
                    .collect::<Result<_, _>>()?,
                since_ms: *since_ms,
                until_ms: *until_ms,
                ..Default::default()
            };
            let n = match output {
                Some(path) => {
                    let f = std::fs::File::create(path).map_err(|e| io_fail(path.display(), e))?;
                    let mut w = std::io::BufWriter::new(f);
                    let n = auth.export_jsonl(&query, &mut w)?;
                    w.flush().map_err(|e| io_fail(path.display(), e))?;
                    n
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = stdout.lock();
                    auth.export_jsonl(&query, &mut lock)?
                }
            };
            if output.is_some() {
                emit(cli, &json!({"exported": n}), || {
                    format!("exported {n} records")
                });
            }
        }
        AuditCmd::Tail { lines } => {
            let mut head = 0;
            auth.ledger().read(&mut |txn| {
                head = txn.audit_head()?.map_or(0, |(seq, _)| seq);
                Ok(())
            })?;
            let records = auth.audit(&AuditQuery {
                after_seq: Some(head.saturating_sub(*lines as u64)),
                ..Default::default()
            })?;
            if cli.json {
                for r in &records {
                    println!("{}", to_json(r));
                }
            } else {
                for r in &records {
                    println!("{}", record_line(r));
                }
            }
        }
    }
    Ok(())
}

fn run(cli: &Cli) -> Out {
    match &cli.cmd {
        Cmd::Init { force } => cmd_init(cli, *force),
        Cmd::Policy(PolicyCmd::Check { file }) => cmd_policy_check(cli, file),
        Cmd::Policy(PolicyCmd::Explain { tool, args, scope }) => {
            cmd_policy_explain(cli, tool, args.as_deref(), scope.as_deref())
        }
        Cmd::Budget(cmd) => cmd_budget(cli, cmd),
        Cmd::Balances { scope } => cmd_balances(cli, scope.as_deref()),
        Cmd::Reservations(ReservationsCmd::List { status, limit }) => {
            cmd_reservations(cli, status.as_deref(), *limit)
        }
        Cmd::Approvals(ApprovalsCmd::List { status, all }) => {
            cmd_approvals(cli, status.as_deref(), *all)
        }
        Cmd::Approve { id, key, ttl, out } => cmd_approve(cli, id, key, ttl, out.as_ref()),
        Cmd::Deny {
            id,
            key,
            reason,
            out,
        } => cmd_deny(cli, id, key, reason, out.as_ref()),
        Cmd::Keygen { id, out } => cmd_keygen(cli, id, out),
        Cmd::Audit(cmd) => cmd_audit(cli, cmd),
        Cmd::Hook(HookCmd::ClaudeCode(args)) => hook::claude_code(cli, args),
    }
}

fn main() -> ExitCode {
    // A panic must never look like success or a soft failure to a hook host: exit 2 blocks.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("cycles: internal error: {info}");
        std::process::exit(2);
    }));
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Check(message, value)) => {
            if cli.json {
                println!("{value}");
            } else {
                eprintln!("cycles: {message}");
            }
            ExitCode::from(1)
        }
        Err(Fail::Error { code, message }) => {
            if cli.json {
                println!("{}", json!({"error": {"code": code, "message": message}}));
            } else {
                eprintln!("cycles: error [{code}]: {message}");
            }
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn ledger_times_print_as_utc_rfc3339() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_795_740_216_558, "2026-11-27T00:43:36.558Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(rfc3339_ms(ms), want, "{ms}");
        }
    }
}

//! Out-of-band approvals: authority the agent does not hold.
//!
//! A call whose tier reaches the policy's `approval.threshold_tier` (default 4) and passes every
//! other check is answered DENY `APPROVAL_REQUIRED` with an [`ApprovalRequest`] recorded in the
//! ledger (namespace [`APPROVAL_NS`]) and audited in the same transaction. An approver in
//! another process signs a [`Grant`] with an Ed25519 key the agent never sees; the agent
//! presents it on `reserve` (`ReserveRequest::grant`), and the state machine checks it against
//! the public keys in the policy, the exact call, the ledger clock and single use, consuming it
//! in the reservation's own transaction. Approval never bypasses budgets: a grant is only looked
//! at once the call passed policy and budget checks.
//!
//! # Which operations record a request
//! Both `decide` and `reserve` answer `APPROVAL_REQUIRED` for a call at the threshold and both
//! record (or reuse) the request, so a preflight `decide` already gives the operator something
//! to approve. A repeated identical call (same subject scopes, same call digest) reuses the
//! request while it is `PENDING` or `GRANTED`; a finished one (denied, expired, consumed) makes
//! the next attempt open a new request. Only `reserve` accepts and consumes grants: the one it
//! is given, or else the grant an approver recorded on the call's request
//! ([`crate::Authority::record_approval`], `cycles approve`), checked exactly like a presented
//! one. So a caller retries the same call after approval without handling the grant itself (an
//! MCP gate, a framework integration); the grant is no secret, it serves only this call and
//! subject, once.
//!
//! # Signed bytes
//! A grant signs these UTF-8 lines, each ending in `\n`, with nothing else:
//!
//! ```text
//! cycles.approval.grant.v2
//! request_id:apr_<32 hex>
//! scope:<the subject's innermost scope path, e.g. tenant:acme/workflow:w1/agent:bot>
//! call_digest:<64 lowercase hex, SHA-256 of the canonical call>
//! approver_id:<1-128 of [A-Za-z0-9_.-]>
//! expires_at_ms:<decimal milliseconds since the epoch, ledger clock>
//! ```
//!
//! The `scope` line (new in v2) binds the grant to the subject the approver was shown, as the
//! digest binds it to the call: a grant obtained by showing an approver another subject (the
//! agent's process builds what a webhook receives) serves no other subject.
//!
//! A denial signs `cycles.approval.denial.v1` then `request_id:`, `call_digest:`,
//! `approver_id:` and `reason_sha256:<64 hex, SHA-256 of the UTF-8 reason>`. Every field is
//! validated to exclude `\n` and `:` where it matters, so the encoding is unambiguous; the
//! domain line keeps a grant from ever verifying as a denial and the reverse. Public keys and
//! signatures travel as lowercase hex (32 and 64 bytes); verification is `verify_strict`.
//!
//! # Statuses
//! `PENDING` → `GRANTED` (a grant was recorded) → `CONSUMED` (a reservation used it);
//! `PENDING`/`GRANTED` → `DENIED` (a signed denial; it also revokes an unused grant);
//! `PENDING` → `EXPIRED` (nobody decided within the policy's `approval.request_ttl_ms`, default
//! [`DEFAULT_REQUEST_TTL_MS`]) and `GRANTED` → `EXPIRED`
//! (the recorded grant ran out unused), both noticed lazily when the request is next touched.
//! A grant may also reach `reserve` without having been recorded (a webhook handed it to the
//! agent): it is then recorded as granted and consumed in the reservation's transaction. Every
//! change is an audit record (`approval_requested`, `approval_granted`, `approval_denied`,
//! `approval_expired`, `approval_consumed`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{AuditKind, AuditRecord, sha256_hex};
use crate::error::{CyclesError, Result};
use crate::ledger::LedgerTxn;
use crate::machine::{Prepared, Settled, append, append_view};
use crate::model::{
    Amount, Balance, Decision, DecisionKind, ReasonCode, Subject, Tier, ToolCall, Unit,
    validate_id, validate_scope,
};
use crate::policy::CompiledPolicy;

/// Ledger key-value namespace holding approval requests, keyed by request id.
pub const APPROVAL_NS: &str = "approval";
/// Namespace mapping (subject scopes, call digest) to the latest request for that call.
pub const APPROVAL_INDEX_NS: &str = "approval_index";
/// How long a request waits for a decision before it expires, unless the policy sets
/// `approval.request_ttl_ms` (1 hour, ledger clock).
pub const DEFAULT_REQUEST_TTL_MS: i64 = 3_600_000;
/// Shortest request lifetime a policy may set (1 second).
pub const MIN_REQUEST_TTL_MS: i64 = 1_000;
/// Longest request lifetime a policy may set (7 days).
pub const MAX_REQUEST_TTL_MS: i64 = 7 * 86_400_000;
/// Longest denial reason.
pub const MAX_REASON_LEN: usize = 256;
/// Largest webhook answer read.
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

const GRANT_DOMAIN: &str = "cycles.approval.grant.v2";
const DENIAL_DOMAIN: &str = "cycles.approval.denial.v1";
/// Rule id reported when the approval threshold turned a call into a denial.
const RULE_THRESHOLD: &str = "approval.threshold";
/// Rule id reported when a valid grant allowed a call.
const RULE_GRANT: &str = "approval.grant";

/// Why a presented grant (or a recorded approver answer) was rejected: the machine-readable
/// sub-reason of `APPROVAL_INVALID` (`Decision::approval_invalid_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalInvalidReason {
    /// The signature does not verify under the grant's public key.
    BadSignature,
    /// The grant's public key is not listed in the policy.
    UnknownKey,
    /// The grant (or its request) is for another call: some argument, the tool or its kind
    /// differs.
    DigestMismatch,
    /// The grant, or its request, expired (ledger clock).
    Expired,
    /// The request was already consumed by a reservation: grants are single use.
    AlreadyUsed,
    /// An approver denied the request.
    DeniedByApprover,
    /// The ledger holds no request with the grant's id.
    UnknownRequest,
    /// The request was made by another subject (its scopes differ).
    SubjectMismatch,
    /// The call is now classified at a higher tier than its request was (the policy that
    /// classifies it changed, or the request was opened under another policy): the approver
    /// agreed to less than this call now is.
    TierRaised,
}

impl ApprovalInvalidReason {
    /// The serialized name (`bad_signature`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalInvalidReason::BadSignature => "bad_signature",
            ApprovalInvalidReason::UnknownKey => "unknown_key",
            ApprovalInvalidReason::DigestMismatch => "digest_mismatch",
            ApprovalInvalidReason::Expired => "expired",
            ApprovalInvalidReason::AlreadyUsed => "already_used",
            ApprovalInvalidReason::DeniedByApprover => "denied_by_approver",
            ApprovalInvalidReason::UnknownRequest => "unknown_request",
            ApprovalInvalidReason::SubjectMismatch => "subject_mismatch",
            ApprovalInvalidReason::TierRaised => "tier_raised",
        }
    }
}

impl std::fmt::Display for ApprovalInvalidReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApprovalStatus {
    /// Waiting for an approver.
    Pending,
    /// A grant was recorded; not used yet.
    Granted,
    /// An approver said no.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// A reservation used the grant.
    Consumed,
}

impl ApprovalStatus {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "PENDING",
            ApprovalStatus::Granted => "GRANTED",
            ApprovalStatus::Denied => "DENIED",
            ApprovalStatus::Expired => "EXPIRED",
            ApprovalStatus::Consumed => "CONSUMED",
        }
    }

    /// Parses the serialized name (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PENDING" => Ok(ApprovalStatus::Pending),
            "GRANTED" => Ok(ApprovalStatus::Granted),
            "DENIED" => Ok(ApprovalStatus::Denied),
            "EXPIRED" => Ok(ApprovalStatus::Expired),
            "CONSUMED" => Ok(ApprovalStatus::Consumed),
            other => Err(CyclesError::invalid(
                "status",
                format!("unknown approval status {other:?}"),
            )),
        }
    }
}

/// An approval request as stored in the ledger and sent to approvers.
///
/// Unlike audit records it carries the call's arguments: an approver must see what it signs
/// (and can check them against `call_digest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// `apr_` and 32 hex characters.
    pub request_id: String,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Who asked.
    pub subject: Subject,
    /// The subject's scopes, outermost first; a grant only serves the same scopes.
    pub scopes: Vec<String>,
    /// The exact call, arguments included.
    pub call: ToolCall,
    /// SHA-256 of the canonical call ([`ToolCall::digest`]).
    pub call_digest: String,
    /// The call's tier.
    pub tier: Tier,
    /// RISK_POINTS the call would hold (with any extra estimate).
    pub risk_points: i64,
    /// Remaining authority: balances of the subject's budgeted scopes when it was requested.
    #[serde(default)]
    pub remaining: Vec<Balance>,
    /// Ledger time of the request.
    pub created_at_ms: i64,
    /// Ledger time after which it can no longer be decided.
    pub expires_at_ms: i64,
    /// Ledger time of the last decision (grant, denial, expiry, consumption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<i64>,
    /// The recorded grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// The recorded denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<Denial>,
    /// The reservation that consumed the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
}

/// A signed, single-use permission for one request and one exact call, until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Who signed (a label; the key is what is trusted).
    pub approver_id: String,
    /// SHA-256 of the canonical call the grant is for.
    pub call_digest: String,
    /// Last valid millisecond on the ledger clock.
    pub expires_at_ms: i64,
    /// The signer's Ed25519 public key, 64 hex characters.
    pub public_key: String,
    /// The request this grant answers.
    pub request_id: String,
    /// The innermost scope of the subject the grant is for (`tenant:acme/agent:bot`); it
    /// serves only a subject with exactly that scope path. (Absent in grants recorded before
    /// v2, which no longer verify.)
    #[serde(default)]
    pub scope: String,
    /// Ed25519 signature of [`Grant::signed_message`], 128 hex characters.
    pub signature: String,
}

/// A signed refusal of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Denial {
    /// Who signed.
    pub approver_id: String,
    /// SHA-256 of the canonical call refused.
    pub call_digest: String,
    /// The signer's Ed25519 public key, 64 hex characters.
    pub public_key: String,
    /// Why (at most 256 characters, signed through its SHA-256).
    pub reason: String,
    /// The request this denial answers.
    pub request_id: String,
    /// Ed25519 signature of [`Denial::signed_message`], 128 hex characters.
    pub signature: String,
}

/// What an approver answered.
///
/// JSON: `{"grant": {...}}`, `{"deny": {...}}` or `"pending"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalResponse {
    /// Approved.
    Grant(Grant),
    /// Refused.
    Deny(Denial),
    /// No decision yet.
    Pending,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn validate_request_id(id: &str, field: &str) -> Result<()> {
    match id.strip_prefix("apr_") {
        Some(rest) if is_hex(rest, 32) => Ok(()),
        _ => Err(CyclesError::invalid(
            field,
            "approval request ids are apr_ and 32 lowercase hex characters",
        )),
    }
}

fn validate_common(
    prefix: &str,
    request_id: &str,
    call_digest: &str,
    approver_id: &str,
    public_key: &str,
    signature: &str,
) -> Result<()> {
    validate_request_id(request_id, &format!("{prefix}.request_id"))?;
    if !is_hex(call_digest, 64) {
        return Err(CyclesError::invalid(
            format!("{prefix}.call_digest"),
            "64 lowercase hex characters",
        ));
    }
    validate_id(approver_id, &format!("{prefix}.approver_id"))?;
    if !is_hex(public_key, 64) {
        return Err(CyclesError::invalid(
            format!("{prefix}.public_key"),
            "an Ed25519 public key: 64 lowercase hex characters",
        ));
    }
    if !is_hex(signature, 128) {
        return Err(CyclesError::invalid(
            format!("{prefix}.signature"),
            "an Ed25519 signature: 128 lowercase hex characters",
        ));
    }
    Ok(())
}

/// The innermost scope path of `subject` (validated), which names all its scopes.
fn innermost_scope(subject: &Subject) -> Result<String> {
    subject
        .scopes()?
        .pop()
        .ok_or_else(|| CyclesError::invalid("subject", "at least one field is required"))
}

/// Checks `signature` over `message` with `public_key`, which must be one of `keys`.
fn verify_signed(
    keys: &[[u8; 32]],
    public_key: &str,
    signature: &str,
    message: &[u8],
) -> std::result::Result<(), ApprovalInvalidReason> {
    let key: [u8; 32] = hex::decode(public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ApprovalInvalidReason::UnknownKey)?;
    if !keys.contains(&key) {
        return Err(ApprovalInvalidReason::UnknownKey);
    }
    let sig: [u8; 64] = hex::decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ApprovalInvalidReason::BadSignature)?;
    let vk = VerifyingKey::from_bytes(&key).map_err(|_| ApprovalInvalidReason::BadSignature)?;
    vk.verify_strict(message, &Signature::from_bytes(&sig))
        .map_err(|_| ApprovalInvalidReason::BadSignature)
}

impl Grant {
    /// The exact bytes a grant signs (see the module docs).
    ///
    /// ```
    /// use cycles_core::approval::Grant;
    /// let m = Grant::signed_message(
    ///     "apr_00000000000000000000000000000001",
    ///     "tenant:acme/agent:bot",
    ///     &"ab".repeat(32),
    ///     "alice",
    ///     5,
    /// );
    /// let text = String::from_utf8(m).unwrap();
    /// assert!(text.starts_with("cycles.approval.grant.v2\n"));
    /// assert!(text.contains("\nscope:tenant:acme/agent:bot\n"));
    /// assert!(text.ends_with("approver_id:alice\nexpires_at_ms:5\n"));
    /// ```
    pub fn signed_message(
        request_id: &str,
        scope: &str,
        call_digest: &str,
        approver_id: &str,
        expires_at_ms: i64,
    ) -> Vec<u8> {
        format!(
            "{GRANT_DOMAIN}\nrequest_id:{request_id}\nscope:{scope}\ncall_digest:{call_digest}\napprover_id:{approver_id}\nexpires_at_ms:{expires_at_ms}\n"
        )
        .into_bytes()
    }

    /// Checks the shape of every field (not the signature): `INVALID_REQUEST` naming the field.
    pub fn validate(&self) -> Result<()> {
        validate_common(
            "grant",
            &self.request_id,
            &self.call_digest,
            &self.approver_id,
            &self.public_key,
            &self.signature,
        )?;
        // A scope path has no `\n`, so the signed lines stay unambiguous.
        validate_scope(&self.scope).map_err(|e| match e {
            CyclesError::InvalidRequest { message, .. } => {
                CyclesError::invalid("grant.scope", message)
            }
            other => other,
        })
    }

    /// Parses and validates a grant presented as JSON (e.g. `ReserveRequest::grant`).
    pub fn from_value(v: &serde_json::Value) -> Result<Grant> {
        let g: Grant = serde_json::from_value(v.clone())
            .map_err(|e| CyclesError::invalid("grant", e.to_string()))?;
        g.validate()?;
        Ok(g)
    }

    /// Verifies the signature with the grant's key, which must be one of `keys` (the policy's).
    pub fn verify(&self, keys: &[[u8; 32]]) -> std::result::Result<(), ApprovalInvalidReason> {
        let msg = Self::signed_message(
            &self.request_id,
            &self.scope,
            &self.call_digest,
            &self.approver_id,
            self.expires_at_ms,
        );
        verify_signed(keys, &self.public_key, &self.signature, &msg)
    }
}

impl Denial {
    /// The exact bytes a denial signs (see the module docs).
    pub fn signed_message(
        request_id: &str,
        call_digest: &str,
        approver_id: &str,
        reason: &str,
    ) -> Vec<u8> {
        format!(
            "{DENIAL_DOMAIN}\nrequest_id:{request_id}\ncall_digest:{call_digest}\napprover_id:{approver_id}\nreason_sha256:{}\n",
            sha256_hex(reason.as_bytes())
        )
        .into_bytes()
    }

    /// Checks the shape of every field (not the signature).
    pub fn validate(&self) -> Result<()> {
        validate_common(
            "denial",
            &self.request_id,
            &self.call_digest,
            &self.approver_id,
            &self.public_key,
            &self.signature,
        )?;
        if self.reason.chars().count() > MAX_REASON_LEN {
            return Err(CyclesError::invalid(
                "denial.reason",
                "at most 256 characters",
            ));
        }
        Ok(())
    }

    /// Verifies the signature with the denial's key, which must be one of `keys`.
    pub fn verify(&self, keys: &[[u8; 32]]) -> std::result::Result<(), ApprovalInvalidReason> {
        let msg = Self::signed_message(
            &self.request_id,
            &self.call_digest,
            &self.approver_id,
            &self.reason,
        );
        verify_signed(keys, &self.public_key, &self.signature, &msg)
    }
}

/// An approver's Ed25519 signing key and id: what `cycles keygen` writes and `cycles approve`
/// signs with. Keep the file away from the agent: whoever reads it can approve.
///
/// ```
/// use cycles_core::approval::ApproverKey;
/// let key = ApproverKey::generate("alice").unwrap();
/// assert_eq!(key.public_key_hex().len(), 64);
/// ```
pub struct ApproverKey {
    approver_id: String,
    signing: SigningKey,
}

impl std::fmt::Debug for ApproverKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("ApproverKey")
            .field("approver_id", &self.approver_id)
            .field("public_key", &self.public_key_hex())
            .finish()
    }
}

/// The key file's JSON form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    approver_id: String,
    public_key: String,
    secret_key: String,
}

const KEY_FORMAT: &str = "cycles-approver-key-v1";

impl ApproverKey {
    /// A new key from the operating system's random source.
    pub fn generate(approver_id: &str) -> Result<Self> {
        validate_id(approver_id, "approver_id")?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| CyclesError::invalid("key", format!("no randomness: {e}")))?;
        Ok(ApproverKey {
            approver_id: approver_id.to_string(),
            signing: SigningKey::from_bytes(&secret),
        })
    }

    /// A key from its 32-byte secret (deterministic; for tests and key import).
    pub fn from_secret(approver_id: &str, secret: [u8; 32]) -> Result<Self> {
        validate_id(approver_id, "approver_id")?;
        Ok(ApproverKey {
            approver_id: approver_id.to_string(),
            signing: SigningKey::from_bytes(&secret),
        })
    }

    /// Reads a key file written by [`ApproverKey::save`]. On Unix a file that its group or
    /// other users may read or write is refused (as ssh does): whoever can read it can approve,
    /// and a copy or `chmod` that widened it must not go unnoticed.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |m: String| CyclesError::invalid("key_file", format!("{}: {m}", path.display()));
        let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The mode of the file opened, not of the path checked beforehand.
            let mode = file
                .metadata()
                .map_err(|e| bad(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(bad(format!(
                    "other users may access this key (mode {:o}); chmod 600 it, and keep it where the agent cannot read it",
                    mode & 0o777
                )));
            }
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(|e| bad(e.to_string()))?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if file.format != KEY_FORMAT {
            return Err(bad(format!("format is not {KEY_FORMAT}")));
        }
        let secret: [u8; 32] = hex::decode(&file.secret_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("secret_key is not 64 hex characters".into()))?;
        let key = Self::from_secret(&file.approver_id, secret)?;
        if key.public_key_hex() != file.public_key {
            return Err(bad("public_key does not match secret_key".into()));
        }
        Ok(key)
    }

    /// Writes the key file; refuses to overwrite, and on Unix makes it readable by its owner
    /// only.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        use std::io::Write;
        let path = path.as_ref();
        let bad = |e: std::io::Error| {
            CyclesError::invalid("key_file", format!("{}: {e}", path.display()))
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(bad)?;
        let file = KeyFile {
            format: KEY_FORMAT.into(),
            approver_id: self.approver_id.clone(),
            public_key: self.public_key_hex(),
            secret_key: hex::encode(self.signing.to_bytes()),
        };
        let mut text = serde_json::to_string_pretty(&file).expect("key files serialize");
        text.push('\n');
        f.write_all(text.as_bytes()).map_err(bad)?;
        f.sync_all().map_err(bad)
    }

    /// The approver id.
    pub fn approver_id(&self) -> &str {
        &self.approver_id
    }

    /// The public key as 64 hex characters (what goes into the policy's
    /// `approval.public_keys`).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    /// Signs a grant for `request`, valid until `expires_at_ms` (ledger clock).
    ///
    /// The grant is for the call in `request.call` and the subject in `request.subject`, whose
    /// digest and scope are computed here: the request's `call_digest` and `scopes` fields are
    /// not trusted. Whoever hands the request to the signer (the agent's process posting it to
    /// a webhook, or anyone able to write the ledger file) could pair a harmless-looking `call`
    /// or `subject` with the digest or scopes of another one; the signer then signs what it was
    /// shown, and such a grant serves no other call (`digest_mismatch`) and no other subject
    /// (`subject_mismatch`). An invalid subject is `INVALID_REQUEST`.
    pub fn grant(&self, request: &ApprovalRequest, expires_at_ms: i64) -> Result<Grant> {
        let scope = innermost_scope(&request.subject)?;
        Ok(self.grant_for(
            &request.request_id,
            &scope,
            &request.call.digest(),
            expires_at_ms,
        ))
    }

    /// Signs a grant for a request id, the subject's innermost scope and a call digest. The
    /// caller vouches that they are those of the subject and call it approved
    /// ([`Subject::scopes`], [`ToolCall::digest`]); prefer [`ApproverKey::grant`].
    pub fn grant_for(
        &self,
        request_id: &str,
        scope: &str,
        call_digest: &str,
        expires_at_ms: i64,
    ) -> Grant {
        let msg = Grant::signed_message(
            request_id,
            scope,
            call_digest,
            &self.approver_id,
            expires_at_ms,
        );
        Grant {
            approver_id: self.approver_id.clone(),
            call_digest: call_digest.to_string(),
            expires_at_ms,
            public_key: self.public_key_hex(),
            request_id: request_id.to_string(),
            scope: scope.to_string(),
            signature: hex::encode(self.signing.sign(&msg).to_bytes()),
        }
    }

    /// Signs a denial of `request`, for the call in `request.call` (its digest computed here,
    /// as for [`ApproverKey::grant`]).
    pub fn deny(&self, request: &ApprovalRequest, reason: &str) -> Result<Denial> {
        if reason.chars().count() > MAX_REASON_LEN {
            return Err(CyclesError::invalid("reason", "at most 256 characters"));
        }
        let call_digest = request.call.digest();
        let msg =
            Denial::signed_message(&request.request_id, &call_digest, &self.approver_id, reason);
        Ok(Denial {
            approver_id: self.approver_id.clone(),
            call_digest,
            public_key: self.public_key_hex(),
            reason: reason.to_string(),
            request_id: request.request_id.clone(),
            signature: hex::encode(self.signing.sign(&msg).to_bytes()),
        })
    }
}

/// Something that answers approval requests. The answer is only trusted after its signature
/// verifies against the policy's keys ([`crate::Authority::record_approval`]); an approver
/// never holds authority by being called.
pub trait Approver: Send + Sync {
    /// Asks for a decision on `request`. `Err` means the approver could not be reached or
    /// answered nonsense; the call stays denied.
    fn request(&self, request: &ApprovalRequest) -> Result<ApprovalResponse>;
}

/// The grant-file approver: reads `<dir>/<request_id>.json`, an [`ApprovalResponse`] written
/// by an operator (`cycles approve ID --key FILE --out DIR/ID.json`) on a machine that holds
/// the key. No file yet is `Pending`.
#[derive(Debug, Clone)]
pub struct GrantFileApprover {
    dir: PathBuf,
}

impl GrantFileApprover {
    /// Answers from files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        GrantFileApprover { dir: dir.into() }
    }
}

impl Approver for GrantFileApprover {
    fn request(&self, request: &ApprovalRequest) -> Result<ApprovalResponse> {
        validate_request_id(&request.request_id, "request_id")?;
        let path = self.dir.join(format!("{}.json", request.request_id));
        match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ApprovalResponse::Pending),
            Err(e) => Err(CyclesError::ApproverUnavailable(format!(
                "{}: {e}",
                path.display()
            ))),
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                CyclesError::ApproverUnavailable(format!(
                    "{}: not an approval: {e}",
                    path.display()
                ))
            }),
        }
    }
}

/// The webhook approver: POSTs the [`ApprovalRequest`] as JSON to a URL and reads an
/// [`ApprovalResponse`] (HTTP 200, at most 64 KiB) back, within a timeout. The service signs
/// with its own key; its answer is verified like any other. Plain `http://` works out of the
/// box; `https://` needs the crate feature `webhook-tls`. Integrity does not rest on the
/// transport: an answer without a valid signature from a policy key is rejected.
#[derive(Debug, Clone)]
pub struct WebhookApprover {
    url: String,
    timeout: Duration,
}

impl WebhookApprover {
    /// POSTs to `url` with a 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookApprover {
            url: url.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the timeout for the whole exchange.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Approver for WebhookApprover {
    fn request(&self, request: &ApprovalRequest) -> Result<ApprovalResponse> {
        let unavailable =
            |m: String| CyclesError::ApproverUnavailable(format!("{}: {m}", self.url));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let body = serde_json::to_vec(request).expect("approval requests serialize");
        let mut resp = agent
            .post(&self.url)
            .header("content-type", "application/json")
            .send(&body[..])
            .map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(|e| unavailable(e.to_string()))?;
        if status != 200 {
            return Err(unavailable(format!("HTTP {status}")));
        }
        serde_json::from_str(&text).map_err(|e| unavailable(format!("not an approval: {e}")))
    }
}

/// An approver that calls a closure in the agent's own process.
///
/// **For tests and demos only: no security boundary.** Whatever runs the agent can run the
/// closure, so this proves nothing about a human or a separate service having agreed. Its
/// answers still have to carry valid signatures from policy keys.
pub struct CallbackApprover<F> {
    f: F,
}

impl<F> CallbackApprover<F>
where
    F: Fn(&ApprovalRequest) -> Result<ApprovalResponse> + Send + Sync,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        CallbackApprover { f }
    }
}

impl<F> Approver for CallbackApprover<F>
where
    F: Fn(&ApprovalRequest) -> Result<ApprovalResponse> + Send + Sync,
{
    fn request(&self, request: &ApprovalRequest) -> Result<ApprovalResponse> {
        (self.f)(request)
    }
}

// ---------------------------------------------------------------------------------------------
// The rules, over a ledger transaction (called from `machine.rs` and the authority).

/// Whether a call of `tier` needs a grant under `policy`.
pub(crate) fn needed(policy: &CompiledPolicy, tier: Tier) -> bool {
    policy.approval_needed(tier)
}

/// A stored request.
pub(crate) fn load(txn: &mut dyn LedgerTxn, id: &str) -> Result<Option<ApprovalRequest>> {
    match txn.kv_get(APPROVAL_NS, id)? {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| CyclesError::LedgerCorrupt(format!("approval {id}: {e}"))),
    }
}

fn store(txn: &mut dyn LedgerTxn, r: &ApprovalRequest) -> Result<()> {
    let v = serde_json::to_value(r).expect("approval requests serialize");
    txn.kv_put(APPROVAL_NS, &r.request_id, &v)
}

/// Every stored request, optionally with one status, oldest first.
pub(crate) fn list(
    txn: &mut dyn LedgerTxn,
    status: Option<ApprovalStatus>,
) -> Result<Vec<ApprovalRequest>> {
    let mut out = Vec::new();
    for (id, v) in txn.kv_list(APPROVAL_NS)? {
        let r: ApprovalRequest = serde_json::from_value(v)
            .map_err(|e| CyclesError::LedgerCorrupt(format!("approval {id}: {e}")))?;
        if status.is_none_or(|s| s == r.status) {
            out.push(r);
        }
    }
    out.sort_by(|a, b| (a.created_at_ms, &a.request_id).cmp(&(b.created_at_ms, &b.request_id)));
    Ok(out)
}

fn index_key(scopes: &[String], call_digest: &str) -> String {
    sha256_hex(format!("{}\n{call_digest}", scopes.join("\n")).as_bytes())
}

/// An audit record about `r`.
fn request_record(kind: AuditKind, r: &ApprovalRequest, now_ms: i64) -> AuditRecord {
    let mut rec = AuditRecord::new(kind, now_ms);
    rec.subject = Some(r.subject.clone());
    rec.scopes.clone_from(&r.scopes);
    rec.action = Some(r.call.action.clone());
    rec.call_digest = Some(r.call_digest.clone());
    rec.tier = Some(r.tier);
    rec.amounts = vec![Amount::new(Unit::RiskPoints, r.risk_points)];
    rec
}

fn detail(r: &ApprovalRequest, extra: serde_json::Value) -> serde_json::Value {
    let mut d = json!({ "approval_request_id": r.request_id });
    if let (Some(m), serde_json::Value::Object(e)) = (d.as_object_mut(), extra) {
        m.extend(e);
    }
    d
}

/// Moves a PENDING request past its deadline, or a GRANTED one whose recorded grant ran out,
/// to EXPIRED, with its audit record.
fn expire_if_due(txn: &mut dyn LedgerTxn, r: &mut ApprovalRequest, now_ms: i64) -> Result<()> {
    let due = match r.status {
        ApprovalStatus::Pending => now_ms > r.expires_at_ms,
        ApprovalStatus::Granted => r.grant.as_ref().is_none_or(|g| now_ms > g.expires_at_ms),
        _ => false,
    };
    if due {
        r.status = ApprovalStatus::Expired;
        r.decided_at_ms = Some(now_ms);
        store(txn, r)?;
        let mut rec = request_record(AuditKind::ApprovalExpired, r, now_ms);
        rec.detail = Some(detail(r, json!({ "expires_at_ms": r.expires_at_ms })));
        append(txn, rec)?;
    }
    Ok(())
}

/// Turns an allowed `decision` into DENY `APPROVAL_REQUIRED`, recording a new request (and its
/// audit record) or reusing the pending or granted one for the same subject scopes and call.
/// A new request stays open for the policy's `approval.request_ttl_ms`.
/// The request the prepared call's index names, when it is for exactly this call and subject
/// and still open (`PENDING` or `GRANTED`); a request found past its deadline is marked
/// expired first (and then is not open).
fn open_request(
    txn: &mut dyn LedgerTxn,
    now_ms: i64,
    prepared: &Prepared<'_>,
) -> Result<Option<ApprovalRequest>> {
    let key = index_key(&prepared.scopes, &prepared.call_digest);
    let Some(id) = txn
        .kv_get(APPROVAL_INDEX_NS, &key)?
        .and_then(|v| v.as_str().map(str::to_string))
    else {
        return Ok(None);
    };
    let Some(mut r) = load(txn, &id)? else {
        return Ok(None);
    };
    expire_if_due(txn, &mut r, now_ms)?;
    let open = matches!(r.status, ApprovalStatus::Pending | ApprovalStatus::Granted);
    let same_call = r.call_digest == prepared.call_digest && r.scopes == prepared.scopes;
    Ok((open && same_call).then_some(r))
}

/// The grant recorded on the prepared call's open request, when it is `GRANTED`: a `reserve`
/// without a grant presents it.
pub(crate) fn recorded_grant(
    txn: &mut dyn LedgerTxn,
    now_ms: i64,
    prepared: &Prepared<'_>,
) -> Result<Option<Grant>> {
    Ok(open_request(txn, now_ms, prepared)?
        .filter(|r| r.status == ApprovalStatus::Granted)
        .and_then(|r| r.grant))
}

pub(crate) fn require(
    txn: &mut dyn LedgerTxn,
    policy: &CompiledPolicy,
    now_ms: i64,
    prepared: &Prepared<'_>,
    decision: &mut Decision,
) -> Result<()> {
    let request = match open_request(txn, now_ms, prepared)? {
        Some(r) => r,
        None => {
            let risk_points = prepared
                .amounts
                .iter()
                .find(|a| a.unit == Unit::RiskPoints)
                .map_or(0, |a| a.amount);
            let r = ApprovalRequest {
                request_id: format!("apr_{}", uuid::Uuid::new_v4().simple()),
                status: ApprovalStatus::Pending,
                subject: prepared.subject.clone(),
                scopes: prepared.scopes.clone(),
                call: prepared.call.clone(),
                call_digest: prepared.call_digest.clone(),
                tier: prepared.assessment.classification.tier,
                risk_points,
                remaining: decision.balances.clone(),
                created_at_ms: now_ms,
                expires_at_ms: now_ms.saturating_add(policy.policy().approval.request_ttl_ms),
                decided_at_ms: None,
                grant: None,
                denial: None,
                reservation_id: None,
            };
            store(txn, &r)?;
            let key = index_key(&prepared.scopes, &prepared.call_digest);
            txn.kv_put(APPROVAL_INDEX_NS, &key, &json!(r.request_id))?;
            let requested = detail(&r, json!({ "expires_at_ms": r.expires_at_ms }));
            let mut rec = prepared.audit(AuditKind::ApprovalRequested, now_ms);
            rec.amounts = &prepared.amounts;
            rec.detail = Some(&requested);
            append_view(txn, rec)?;
            r
        }
    };
    decision.decision = DecisionKind::Deny;
    decision.reason_code = Some(ReasonCode::ApprovalRequired);
    decision.caps = None;
    decision.rules.push(RULE_THRESHOLD.into());
    decision.message = Some(format!(
        "tier {} calls need an approval: request {} ({}), open until {}",
        request.tier.get(),
        request.request_id,
        request.status.as_str(),
        request.expires_at_ms
    ));
    decision.approval_request_id = Some(request.request_id);
    Ok(())
}

/// Checks a grant presented for the prepared call. On success returns the request to consume
/// (the decision keeps its ALLOW and names the request); on failure turns `decision` into DENY
/// `APPROVAL_INVALID` with its sub-reason and returns `None`. Only a lazily noticed request
/// expiry is written.
pub(crate) fn check_grant(
    txn: &mut dyn LedgerTxn,
    policy: &CompiledPolicy,
    now_ms: i64,
    prepared: &Prepared<'_>,
    grant: &Grant,
    decision: &mut Decision,
) -> Result<Option<ApprovalRequest>> {
    let verdict = (|| -> Result<std::result::Result<ApprovalRequest, ApprovalInvalidReason>> {
        use ApprovalInvalidReason as R;
        if let Err(r) = grant.verify(&policy.policy().approval.keys()) {
            return Ok(Err(r));
        }
        let Some(mut request) = load(txn, &grant.request_id)? else {
            return Ok(Err(R::UnknownRequest));
        };
        expire_if_due(txn, &mut request, now_ms)?;
        if grant.call_digest != prepared.call_digest || request.call_digest != prepared.call_digest
        {
            return Ok(Err(R::DigestMismatch));
        }
        if request.scopes != prepared.scopes
            || prepared.scopes.last().map(String::as_str) != Some(grant.scope.as_str())
        {
            return Ok(Err(R::SubjectMismatch));
        }
        // The approver was shown the request's tier; a grant never covers more than that.
        if prepared.assessment.classification.tier > request.tier {
            return Ok(Err(R::TierRaised));
        }
        Ok(match request.status {
            ApprovalStatus::Denied => Err(R::DeniedByApprover),
            ApprovalStatus::Consumed => Err(R::AlreadyUsed),
            ApprovalStatus::Expired => Err(R::Expired),
            _ if now_ms > grant.expires_at_ms => Err(R::Expired),
            ApprovalStatus::Pending | ApprovalStatus::Granted => Ok(request),
        })
    })()?;
    decision.approval_request_id = Some(grant.request_id.clone());
    match verdict {
        Ok(request) => {
            decision.rules.push(RULE_GRANT.into());
            Ok(Some(request))
        }
        Err(reason) => {
            decision.decision = DecisionKind::Deny;
            decision.reason_code = Some(ReasonCode::ApprovalInvalid);
            decision.approval_invalid_reason = Some(reason);
            decision.caps = None;
            decision.rules.push(RULE_THRESHOLD.into());
            decision.message = Some(format!(
                "the grant for {} is not valid for this call: {reason}",
                grant.request_id
            ));
            Ok(None)
        }
    }
}

/// Marks `request` consumed by `reservation_id` (in the reservation's transaction), recording
/// the grant first when it had not been recorded.
pub(crate) fn consume(
    txn: &mut dyn LedgerTxn,
    now_ms: i64,
    mut request: ApprovalRequest,
    grant: &Grant,
    reservation_id: &str,
) -> Result<()> {
    if request.status == ApprovalStatus::Pending {
        let mut rec = request_record(AuditKind::ApprovalGranted, &request, now_ms);
        rec.detail = Some(detail(
            &request,
            json!({ "approver_id": grant.approver_id, "grant_expires_at_ms": grant.expires_at_ms, "recorded_by": "reserve" }),
        ));
        append(txn, rec)?;
    }
    request.status = ApprovalStatus::Consumed;
    request.grant = Some(grant.clone());
    request.decided_at_ms = Some(now_ms);
    request.reservation_id = Some(reservation_id.to_string());
    store(txn, &request)?;
    let mut rec = request_record(AuditKind::ApprovalConsumed, &request, now_ms);
    rec.reservation_id = Some(reservation_id.to_string());
    rec.detail = Some(detail(
        &request,
        json!({ "approver_id": grant.approver_id }),
    ));
    append(txn, rec)
}

fn invalid(reason: ApprovalInvalidReason, message: impl Into<String>) -> CyclesError {
    CyclesError::ApprovalInvalid {
        reason,
        message: message.into(),
    }
}

/// Records an approver's answer: a grant makes the request GRANTED, a denial DENIED (also
/// revoking an unused grant), `Pending` changes nothing. The signature must verify against a
/// policy key and the answer must be for the request's call. `Ok(Err(..))` is a refusal whose
/// lazily noticed expiry is still committed.
pub(crate) fn record(
    txn: &mut dyn LedgerTxn,
    policy: &CompiledPolicy,
    now_ms: i64,
    id: &str,
    response: &ApprovalResponse,
) -> Result<Settled<ApprovalRequest>> {
    use ApprovalInvalidReason as R;
    let keys = policy.policy().approval.keys();
    let (request_id, digest, scope, verified) = match response {
        ApprovalResponse::Pending => (id, None, None, Ok(())),
        ApprovalResponse::Grant(g) => {
            g.validate()?;
            let verified = g.verify(&keys);
            (
                g.request_id.as_str(),
                Some(&g.call_digest),
                Some(&g.scope),
                verified,
            )
        }
        ApprovalResponse::Deny(d) => {
            d.validate()?;
            (
                d.request_id.as_str(),
                Some(&d.call_digest),
                None,
                d.verify(&keys),
            )
        }
    };
    if request_id != id {
        return Err(CyclesError::invalid(
            "request_id",
            format!("the answer is for {request_id}, not {id}"),
        ));
    }
    let mut request =
        load(txn, id)?.ok_or_else(|| CyclesError::NotFound(format!("approval request {id}")))?;
    if let Err(reason) = verified {
        return Ok(Err(invalid(
            reason,
            format!("the answer for {id} is not signed by a policy key"),
        )));
    }
    expire_if_due(txn, &mut request, now_ms)?;
    if digest.is_some_and(|d| *d != request.call_digest) {
        return Ok(Err(invalid(
            R::DigestMismatch,
            format!("the answer for {id} names another call"),
        )));
    }
    if scope.is_some_and(|s| request.scopes.last() != Some(s)) {
        return Ok(Err(invalid(
            R::SubjectMismatch,
            format!("the grant for {id} names another subject"),
        )));
    }
    let refusal = match request.status {
        ApprovalStatus::Consumed => Some(R::AlreadyUsed),
        ApprovalStatus::Expired => Some(R::Expired),
        ApprovalStatus::Denied if matches!(response, ApprovalResponse::Grant(_)) => {
            Some(R::DeniedByApprover)
        }
        _ => None,
    };
    if let Some(reason) = refusal {
        return Ok(Err(invalid(
            reason,
            format!("request {id} is {}", request.status.as_str()),
        )));
    }
    match response {
        ApprovalResponse::Pending => {}
        ApprovalResponse::Grant(g) => {
            if now_ms > g.expires_at_ms {
                return Ok(Err(invalid(
                    R::Expired,
                    format!("the grant for {id} has expired"),
                )));
            }
            request.status = ApprovalStatus::Granted;
            request.grant = Some(g.clone());
            request.decided_at_ms = Some(now_ms);
            store(txn, &request)?;
            let mut rec = request_record(AuditKind::ApprovalGranted, &request, now_ms);
            rec.detail = Some(detail(
                &request,
                json!({ "approver_id": g.approver_id, "grant_expires_at_ms": g.expires_at_ms }),
            ));
            append(txn, rec)?;
        }
        ApprovalResponse::Deny(d) => {
            if request.status != ApprovalStatus::Denied {
                request.status = ApprovalStatus::Denied;
                request.grant = None;
                request.denial = Some(d.clone());
                request.decided_at_ms = Some(now_ms);
                store(txn, &request)?;
                let mut rec = request_record(AuditKind::ApprovalDenied, &request, now_ms);
                rec.detail = Some(detail(
                    &request,
                    json!({ "approver_id": d.approver_id, "reason": d.reason }),
                ));
                append(txn, rec)?;
            }
        }
    }
    Ok(Ok(request))
}

/// The approval fields of a decision, for its audit record's `detail`.
pub(crate) fn decision_detail(d: &Decision) -> Option<serde_json::Value> {
    let mut m = serde_json::Map::new();
    if let Some(id) = &d.approval_request_id {
        m.insert("approval_request_id".into(), json!(id));
    }
    if let Some(r) = d.approval_invalid_reason {
        m.insert("approval_invalid_reason".into(), json!(r.as_str()));
    }
    (!m.is_empty()).then_some(serde_json::Value::Object(m))
}

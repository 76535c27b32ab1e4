//! The one translation from [`CyclesError`] to a JS `Error`.
//!
//! The JS error carries `code` (the core's stable [`CyclesError::code`]), `kind` (the error
//! family), and on denials `reasonCode` and `decision`. Nothing here decides anything: the
//! fields are copied from the core's error.

use cycles_core::{CyclesError, ErrorKind};
use napi::bindgen_prelude::{JsObjectValue, Object, ToNapiValue};
use napi::{Env, JsValue, Status, Unknown};

use crate::types;

/// The family name of a core error kind (`err.kind` in JS).
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "InvalidInput",
        ErrorKind::Denied => "Denied",
        ErrorKind::Policy => "Policy",
        ErrorKind::Ledger => "Ledger",
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Conflict => "Conflict",
    }
}

/// Core request fields under the names JS callers use (`ttl_ms` is `ttlMs` here).
const JS_FIELDS: &[(&str, &str)] = &[
    ("ttl_ms", "ttlMs"),
    ("grace_period_ms", "gracePeriodMs"),
    ("overage_policy", "overagePolicy"),
    ("idempotency_key", "idempotencyKey"),
    ("extend_by_ms", "byMs"),
    ("overdraft_limit", "overdraftLimit"),
    ("since_ms", "sinceMs"),
    ("until_ms", "untilMs"),
    ("after_seq", "afterSeq"),
];

/// The field path as the JS caller wrote it: only a known core name in the first segment is
/// renamed (deeper segments are the caller's own keys or core names that need no renaming).
pub fn js_field(field: &str) -> String {
    let end = field.find(['.', '[']).unwrap_or(field.len());
    match JS_FIELDS.iter().find(|(core, _)| *core == &field[..end]) {
        Some((_, js)) => format!("{js}{}", &field[end..]),
        None => field.to_string(),
    }
}

/// Builds the JS error for `e`. If even that fails, a plain error with the code still goes out,
/// so a failure is never turned into a success.
pub fn to_js(env: &Env, e: CyclesError) -> napi::Error {
    match build(env, &e) {
        Ok(err) => err,
        Err(_) => napi::Error::new(Status::GenericFailure, format!("{}: {e}", e.code())),
    }
}

fn build(env: &Env, e: &CyclesError) -> napi::Result<napi::Error> {
    let mut obj: Object =
        env.create_error(napi::Error::new(Status::GenericFailure, e.to_string()))?;
    obj.set_named_property("name", "CyclesError")?;
    obj.set_named_property("code", e.code())?;
    obj.set_named_property("kind", kind_name(e.kind()))?;
    match e {
        CyclesError::InvalidRequest { field, .. } => {
            obj.set_named_property("field", js_field(field))?;
        }
        CyclesError::Denied(d) => {
            if let Some(r) = d.reason_code {
                obj.set_named_property("reasonCode", r.as_str())?;
            }
            if let Some(id) = &d.approval_request_id {
                obj.set_named_property("approvalRequestId", id.as_str())?;
            }
            let decision = types::Decision::from(d.as_ref());
            // SAFETY: `env` is the live env of the current call.
            let raw = unsafe { types::Decision::to_napi_value(env.raw(), decision)? };
            let decision = unsafe { Unknown::from_raw_unchecked(env.raw(), raw) };
            obj.set_named_property("decision", decision)?;
        }
        CyclesError::BudgetExceeded { scope, unit }
        | CyclesError::OverdraftLimitExceeded { scope, unit } => {
            obj.set_named_property("scope", scope.as_str())?;
            obj.set_named_property("unit", unit.as_str())?;
        }
        _ => {}
    }
    Ok(napi::Error::from(obj.to_unknown()))
}

#[cfg(test)]
mod tests {
    use super::js_field;

    #[test]
    fn core_field_names_become_js_names() {
        assert_eq!(js_field("ttl_ms"), "ttlMs");
        assert_eq!(js_field("extend_by_ms"), "byMs");
        assert_eq!(js_field("idempotency_key"), "idempotencyKey");
        assert_eq!(js_field("estimate[0].amount"), "estimate[0].amount");
        assert_eq!(js_field("subject.tenant"), "subject.tenant");
        assert_eq!(js_field("args.ttl_ms"), "args.ttl_ms");
    }
}

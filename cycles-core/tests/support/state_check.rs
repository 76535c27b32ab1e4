//! Assertions on `verify`'s state check, shared by the `state_check_*` suites.
#![allow(dead_code)]

use cycles_core::{Authority, VerifyReport};

/// The chain is intact and the ledger's state is what it says.
pub fn assert_clean(auth: &Authority, what: &str) {
    let v = auth.verify().unwrap();
    assert!(v.ok && v.state_mismatches.is_empty(), "{what}: {v:?}");
}

/// `verify` now: the chain is intact but `item` is reported, with `reason_has` in its reason;
/// returns the report for further checks.
pub fn assert_mismatch(auth: &Authority, item: &str, reason_has: &str, what: &str) -> VerifyReport {
    let v = auth.verify().unwrap();
    assert_reports(&v, item, reason_has, what);
    v
}

/// `report`: the chain is intact but `item` is reported, with `reason_has` in its reason.
pub fn assert_reports(report: &VerifyReport, item: &str, reason_has: &str, what: &str) {
    assert!(!report.ok, "{what}: {report:?}");
    assert!(report.first_broken.is_none(), "{what}: {report:?}");
    assert!(
        report
            .state_mismatches
            .iter()
            .any(|m| m.item == item && m.reason.contains(reason_has)),
        "{what}: expected {item} ({reason_has}) in {:?}",
        report.state_mismatches
    );
}

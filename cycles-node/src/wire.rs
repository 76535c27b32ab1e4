//! A numeric wire for the two hottest results: `decideSync`'s Decision and `commitSync`'s
//! CommitResult.
//!
//! Materialising a result through `JSON.parse` (see [`crate::fast`]) costs more than the
//! core's whole decide: the parser scans the text and looks every key up in V8's string table.
//! Here the Rust side writes the result's numbers into a `Float64Array` the JS layer owns, and
//! its strings (decision kinds, units, statuses, scope paths, rule ids: a small, repeating set)
//! as indexes into a JS array of names that this module appends to the first time it meets a
//! name. `cycles.js` rebuilds the plain object with object literals, which V8 compiles to
//! fixed-shape allocations. The object is the same either way (same keys, same order, same
//! values).
//!
//! An integer beyond 2^53 (a JS number cannot hold it exactly) is written as NaN in its f64
//! slot and exactly into the same slot of a `BigInt64Array`, and read back as a bigint, as the
//! JSON path gives it. Anything the wire does not carry (caps, a message, an approval request,
//! a result too long for the buffer) makes the encoder step aside: the method then returns the
//! full object built the usual way, so both paths give the same result.
//!
//! Layouts (f64 slots; a name is an index into the names array, -1 when absent):
//! - Decision: `decision, reasonCode, tier, riskPoints, scope, hasRetryAfter(0/1), retryAfterMs,
//!   nRules, rule..., nBalances, balance...`
//! - CommitResult: `status, nCharged, (unit, amount)..., nReleased, (unit, amount)...,
//!   nDebt, (unit, amount)..., nBalances, balance...` (the reservation id is the return value)
//! - balance: `scope, unit, allocated, spent, reserved, debt, remaining, overdraftLimit,
//!   isOverLimit(0/1), status`

use std::cell::RefCell;
use std::ptr;

use napi::sys;
use napi::{JsValue, Unknown};

use cycles_core as core;
use rustc_hash::FxHashMap as HashMap;

use crate::convert::MAX_SAFE_INTEGER;

/// Names kept per JS thread before the table starts over (scope paths can be many over a
/// long-lived process: one per workflow or session).
const MAX_NAMES: usize = 4_096;

struct Names {
    env: sys::napi_env,
    ids: HashMap<String, u32>,
}

thread_local! {
    static NAMES: RefCell<Option<Names>> = const { RefCell::new(None) };
}

fn ok(status: sys::napi_status) -> Option<()> {
    (status == sys::Status::napi_ok).then_some(())
}

/// The output side of one call: the JS buffer and names array, and the writes so far.
pub struct Wire<'a> {
    env: sys::napi_env,
    nums: &'a mut [f64],
    bigs: &'a mut [i64],
    names_js: sys::napi_value,
    at: usize,
}

/// The live backing store of a typed array of `kind`, or `None`.
///
/// # Safety
/// `v` must be a live handle of the current call on the JS thread.
unsafe fn typed<'a, T>(env: sys::napi_env, v: &Unknown<'a>, kind: i32) -> Option<&'a mut [T]> {
    let mut ty = 0;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    let mut buffer = ptr::null_mut();
    let mut offset = 0usize;
    ok(unsafe {
        sys::napi_get_typedarray_info(
            env,
            v.value().value,
            &mut ty,
            &mut len,
            &mut data,
            &mut buffer,
            &mut offset,
        )
    })?;
    if ty != kind || data.is_null() || len == 0 {
        return None;
    }
    // SAFETY: V8 hands out the live, aligned backing store of the typed array (`len` elements
    // of T); nothing else touches it until this synchronous call returns.
    Some(unsafe { std::slice::from_raw_parts_mut(data.cast::<T>(), len) })
}

impl<'a> Wire<'a> {
    /// The wire over `(nums: Float64Array, bigs: BigInt64Array, names: Array)` of the current
    /// call (the typed arrays of the same length), or `None` when they are not that (the caller
    /// then answers with the full object).
    ///
    /// # Safety
    /// The handles must be live handles of the current call on the JS thread.
    pub unsafe fn open(
        nums: &Unknown<'a>,
        bigs: &Unknown<'a>,
        names: &Unknown<'a>,
    ) -> Option<Wire<'a>> {
        let env = nums.value().env;
        let nums = unsafe { typed::<f64>(env, nums, sys::TypedarrayType::float64_array) }?;
        let bigs = unsafe { typed::<i64>(env, bigs, sys::TypedarrayType::bigint64_array) }?;
        if bigs.len() != nums.len() {
            return None;
        }
        let mut is_array = false;
        ok(unsafe { sys::napi_is_array(env, names.value().value, &mut is_array) })?;
        if !is_array {
            return None;
        }
        Some(Wire {
            env,
            nums,
            bigs,
            names_js: names.value().value,
            at: 0,
        })
    }

    fn put(&mut self, v: f64) -> Option<()> {
        *self.nums.get_mut(self.at)? = v;
        self.at += 1;
        Some(())
    }

    fn int(&mut self, v: i64) -> Option<()> {
        if v.unsigned_abs() <= MAX_SAFE_INTEGER as u64 {
            return self.put(v as f64);
        }
        *self.bigs.get_mut(self.at)? = v;
        self.put(f64::NAN)
    }

    /// Writes the index of `name`, adding it to the JS names array the first time.
    fn name(&mut self, name: &str) -> Option<()> {
        let id = NAMES.with(|cell| {
            let mut cell = cell.borrow_mut();
            let table = match cell.as_mut() {
                Some(t) if t.env == self.env => t,
                _ => cell.insert(Names {
                    env: self.env,
                    ids: HashMap::default(),
                }),
            };
            if let Some(id) = table.ids.get(name) {
                return Some(*id);
            }
            let id = table.ids.len() as u32;
            let mut s = ptr::null_mut();
            // SAFETY: live env of the current call; `names_js` is its array.
            unsafe {
                ok(sys::napi_create_string_utf8(
                    self.env,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    &mut s,
                ))?;
                ok(sys::napi_set_element(self.env, self.names_js, id, s))?;
            }
            table.ids.insert(name.to_string(), id);
            Some(id)
        })?;
        self.put(f64::from(id))
    }

    fn opt_name(&mut self, name: Option<&str>) -> Option<()> {
        match name {
            Some(n) => self.name(n),
            None => self.put(-1.0),
        }
    }

    fn amounts(&mut self, list: &[core::Amount]) -> Option<()> {
        self.put(list.len() as f64)?;
        for a in list {
            self.name(a.unit.as_str())?;
            self.int(a.amount)?;
        }
        Some(())
    }

    fn balances(&mut self, list: &[core::Balance]) -> Option<()> {
        self.put(list.len() as f64)?;
        for b in list {
            self.name(&b.scope)?;
            self.name(b.unit.as_str())?;
            for v in [
                b.allocated,
                b.spent,
                b.reserved,
                b.debt,
                b.remaining,
                b.overdraft_limit,
            ] {
                self.int(v)?;
            }
            self.put(if b.is_over_limit { 1.0 } else { 0.0 })?;
            self.name(b.status.as_str())?;
        }
        Some(())
    }

    /// Starts the names table over when this result could overflow it, before any index of
    /// the result is written (indexes written earlier in the same result must stay valid).
    fn make_room(&self, names_in_result: usize) {
        NAMES.with(|cell| {
            if let Some(t) = cell.borrow_mut().as_mut()
                && t.ids.len() + names_in_result > MAX_NAMES
            {
                t.ids.clear();
            }
        });
    }

    /// Writes a decision; `None` when the wire cannot carry it.
    pub fn decision(mut self, d: &core::Decision) -> Option<()> {
        if d.caps.is_some()
            || d.message.is_some()
            || d.approval_request_id.is_some()
            || d.approval_invalid_reason.is_some()
        {
            return None;
        }
        self.make_room(3 + d.rules.len() + 3 * d.balances.len());
        self.name(d.decision.as_str())?;
        self.opt_name(d.reason_code.map(|r| r.as_str()))?;
        self.put(f64::from(d.tier.get()))?;
        self.int(d.risk_points)?;
        self.opt_name(d.scope.as_deref())?;
        self.put(if d.retry_after_ms.is_some() { 1.0 } else { 0.0 })?;
        self.int(d.retry_after_ms.unwrap_or(0))?;
        self.put(d.rules.len() as f64)?;
        for r in &d.rules {
            self.name(r)?;
        }
        self.balances(&d.balances)
    }

    /// Writes a commit result but its reservation id (the caller returns that).
    pub fn commit(mut self, c: &core::CommitResult) -> Option<()> {
        // A charge after expiry names its event, which the wire has no slot for.
        if c.event_id.is_some() {
            return None;
        }
        let amounts = c.charged.len() + c.released.len() + c.debt_incurred.len();
        self.make_room(1 + amounts + 3 * c.balances.len());
        self.name(c.status.as_str())?;
        self.amounts(&c.charged)?;
        self.amounts(&c.released)?;
        self.amounts(&c.debt_incurred)?;
        self.balances(&c.balances)
    }
}

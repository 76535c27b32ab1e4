//! JSON fast paths across the JS boundary.
//!
//! Building a JS object property by property through Node-API costs several times the core's
//! own work per call (each key is a UTF-8 decode and a string-table lookup, each property a map
//! transition). V8's `JSON.stringify` and `JSON.parse` do the same work in one native pass, so
//! requests cross as JSON text when the text is exact, and results come back as JSON text when
//! every integer in them is a safe integer. Whenever the text could not be exact (a bigint, NaN,
//! a number above 2^53, a function, a cycle), the fast path steps aside and the exact
//! value-by-value conversion runs instead ([`crate::convert`] in, the napi-derived objects out),
//! so both paths give the same result or the same error.

use std::cell::RefCell;
use std::ptr;

use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use serde::Serialize;

/// Makes `JSON.stringify` throw where its text would not be exact, so the caller falls back.
const REPLACER: &str = "(function (k, v) {
  switch (typeof v) {
    case 'number':
      if (!Number.isFinite(v) || (Number.isInteger(v) && !Number.isSafeInteger(v))) throw 0
      return v
    case 'bigint': case 'function': case 'symbol':
      throw 0
    case 'undefined':
      if (Array.isArray(this)) throw 0
      return v
    default:
      // A Map or Set stringifies as {} (its entries dropped): the exact reader refuses it.
      if (v instanceof Map || v instanceof Set || v instanceof WeakMap || v instanceof WeakSet) throw 0
      return v
  }
})";

struct Cache {
    env: sys::napi_env,
    json: sys::napi_ref,
    stringify: sys::napi_ref,
    parse: sys::napi_ref,
    replacer: sys::napi_ref,
}

thread_local! {
    // One JS thread per env; a new env on this thread (a worker re-using it) rebuilds the cache.
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

struct Handles {
    json: sys::napi_value,
    stringify: sys::napi_value,
    parse: sys::napi_value,
    replacer: sys::napi_value,
}

fn ok(status: sys::napi_status) -> Option<()> {
    (status == sys::Status::napi_ok).then_some(())
}

/// Clears an exception the fast path provoked, so it never reaches the caller.
unsafe fn clear_exception(env: sys::napi_env) {
    let mut pending = false;
    unsafe {
        if sys::napi_is_exception_pending(env, &mut pending) == sys::Status::napi_ok && pending {
            let mut e = ptr::null_mut();
            sys::napi_get_and_clear_last_exception(env, &mut e);
        }
    }
}

unsafe fn reference(env: sys::napi_env, v: sys::napi_value) -> Option<sys::napi_ref> {
    let mut r = ptr::null_mut();
    ok(unsafe { sys::napi_create_reference(env, v, 1, &mut r) })?;
    Some(r)
}

unsafe fn build_cache(env: sys::napi_env) -> Option<Cache> {
    unsafe {
        let mut global = ptr::null_mut();
        ok(sys::napi_get_global(env, &mut global))?;
        let mut json = ptr::null_mut();
        ok(sys::napi_get_named_property(
            env,
            global,
            c"JSON".as_ptr(),
            &mut json,
        ))?;
        let mut stringify = ptr::null_mut();
        ok(sys::napi_get_named_property(
            env,
            json,
            c"stringify".as_ptr(),
            &mut stringify,
        ))?;
        let mut parse = ptr::null_mut();
        ok(sys::napi_get_named_property(
            env,
            json,
            c"parse".as_ptr(),
            &mut parse,
        ))?;
        let mut source = ptr::null_mut();
        ok(sys::napi_create_string_utf8(
            env,
            REPLACER.as_ptr().cast(),
            REPLACER.len() as isize,
            &mut source,
        ))?;
        let mut replacer = ptr::null_mut();
        if sys::napi_run_script(env, source, &mut replacer) != sys::Status::napi_ok {
            clear_exception(env);
            return None;
        }
        Some(Cache {
            env,
            json: reference(env, json)?,
            stringify: reference(env, stringify)?,
            parse: reference(env, parse)?,
            replacer: reference(env, replacer)?,
        })
    }
}

unsafe fn handles(env: sys::napi_env) -> Option<Handles> {
    CACHE.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.as_ref().map(|c| c.env) != Some(env) {
            *cache = unsafe { build_cache(env) };
        }
        let c = cache.as_ref()?;
        let get = |r: sys::napi_ref| {
            let mut v = ptr::null_mut();
            ok(unsafe { sys::napi_get_reference_value(env, r, &mut v) })?;
            (!v.is_null()).then_some(v)
        };
        Some(Handles {
            json: get(c.json)?,
            stringify: get(c.stringify)?,
            parse: get(c.parse)?,
            replacer: get(c.replacer)?,
        })
    })
}

/// `JSON.stringify(value)` when that text is exact; `None` means "use the exact walker".
///
/// # Safety
/// `env` and `value` must be live handles of the current call.
pub unsafe fn stringify(env: sys::napi_env, value: sys::napi_value) -> Option<String> {
    unsafe {
        let h = handles(env)?;
        let argv = [value, h.replacer];
        let mut text = ptr::null_mut();
        if sys::napi_call_function(env, h.json, h.stringify, 2, argv.as_ptr(), &mut text)
            != sys::Status::napi_ok
        {
            clear_exception(env);
            return None;
        }
        let mut ty = 0;
        ok(sys::napi_typeof(env, text, &mut ty))?;
        if ty != sys::ValueType::napi_string {
            return None;
        }
        let mut len = 0usize;
        ok(sys::napi_get_value_string_utf8(
            env,
            text,
            ptr::null_mut(),
            0,
            &mut len,
        ))?;
        let mut buf: Vec<u8> = Vec::with_capacity(len + 1);
        let mut written = 0usize;
        ok(sys::napi_get_value_string_utf8(
            env,
            text,
            buf.as_mut_ptr().cast(),
            len + 1,
            &mut written,
        ))?;
        buf.set_len(written);
        String::from_utf8(buf).ok()
    }
}

/// `JSON.parse(text)`, or `None` if that failed (the caller then builds the value itself).
///
/// # Safety
/// `env` must be the live env of the current call.
pub unsafe fn parse(env: sys::napi_env, text: &str) -> Option<sys::napi_value> {
    unsafe {
        let h = handles(env)?;
        let mut s = ptr::null_mut();
        ok(sys::napi_create_string_utf8(
            env,
            text.as_ptr().cast(),
            text.len() as isize,
            &mut s,
        ))?;
        let mut out = ptr::null_mut();
        if sys::napi_call_function(env, h.json, h.parse, 1, [s].as_ptr(), &mut out)
            != sys::Status::napi_ok
        {
            clear_exception(env);
            return None;
        }
        Some(out)
    }
}

/// Whether JSON text holds an integer beyond 2^53 (outside strings). Such a value must cross
/// as a bigint, which JSON cannot carry.
pub fn has_unsafe_int(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let token = &text[start..i];
                let digits = token.bytes().filter(u8::is_ascii_digit).count();
                // 2^53 has 16 digits: anything shorter is safe, anything longer is not.
                if digits >= 16
                    && !token.contains(['.', 'e', 'E'])
                    && token.parse::<i128>().map_or(true, |n| {
                        n.unsigned_abs() > crate::convert::MAX_SAFE_INTEGER as u128
                    })
                {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

/// A result as a JS value: `JSON.parse` of its JSON text when every integer in it is safe,
/// otherwise built value by value with bigints ([`crate::types::Json`]). The same JS value
/// either way (key order aside).
///
/// # Safety
/// `env` must be the live env of the current call.
pub unsafe fn to_js<T: Serialize>(env: sys::napi_env, v: &T) -> napi::Result<sys::napi_value> {
    let text = serde_json::to_string(v).map_err(|e| napi::Error::from_reason(e.to_string()))?;
    if !has_unsafe_int(&text)
        && let Some(js) = unsafe { parse(env, &text) }
    {
        return Ok(js);
    }
    let value = serde_json::to_value(v).map_err(|e| napi::Error::from_reason(e.to_string()))?;
    unsafe { crate::types::Json::to_napi_value(env, crate::types::Json(value)) }
}

#[cfg(test)]
mod tests {
    use super::has_unsafe_int;

    #[test]
    fn finds_integers_beyond_2_pow_53_outside_strings() {
        assert!(!has_unsafe_int(
            r#"{"a":9007199254740991,"b":-9007199254740991}"#
        ));
        assert!(has_unsafe_int(r#"{"a":9007199254740992}"#));
        assert!(has_unsafe_int(r#"[1,-2305843009213693952]"#));
        assert!(!has_unsafe_int(
            r#"{"s":"9223372036854775807","t":"a\"12345678901234567"}"#
        ));
        assert!(has_unsafe_int(r#"{"s":"x\\","n":12345678901234567}"#));
        assert!(!has_unsafe_int(r#"{"f":1234567890123456.5}"#));
    }
}

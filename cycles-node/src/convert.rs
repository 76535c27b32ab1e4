//! JS values in, core requests out.
//!
//! Every JS argument is walked into a `serde_json::Value` here, with integers checked on the way
//! (a JS number must be a safe integer, a bigint must fit i64), then renamed from the JS
//! camelCase keys to the core's field names and deserialized into the core's request structs.
//! The core validates the rest. Every failure is `INVALID_REQUEST` naming the field, raised
//! before the authority is called, so bad input changes nothing.

use cycles_core::CyclesError;
use napi::bindgen_prelude::{BigInt, JsObjectValue, Object};
use napi::{JsValue, Unknown, ValueType};
use serde_json::{Map, Number, Value};

/// Largest integer a JS number holds exactly (2^53 - 1).
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// Deepest nesting accepted (tool arguments included); deeper input is refused, not recursed.
pub const MAX_DEPTH: usize = 64;

/// How numbers are read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Numbers {
    /// Request fields (amounts, times): integers only, a number must be a safe integer.
    Integers,
    /// Free-form JSON (tool arguments, grants): any finite number.
    Json,
}

fn invalid(field: &str, message: impl Into<String>) -> CyclesError {
    CyclesError::invalid(if field.is_empty() { "request" } else { field }, message)
}

fn napi_failed(field: &str, e: napi::Error) -> CyclesError {
    invalid(field, format!("unreadable value: {}", e.reason))
}

/// Walks one JS value into JSON. `undefined` is `None` (an absent property).
pub fn to_json(
    v: &Unknown<'_>,
    field: &str,
    numbers: Numbers,
) -> Result<Option<Value>, CyclesError> {
    walk(v, field, numbers, 0)
}

fn walk(
    v: &Unknown<'_>,
    field: &str,
    numbers: Numbers,
    depth: usize,
) -> Result<Option<Value>, CyclesError> {
    if depth > MAX_DEPTH {
        return Err(invalid(
            field,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let ty = v.get_type().map_err(|e| napi_failed(field, e))?;
    // SAFETY (every `cast` below): the value's type was checked by `get_type` just above.
    let out = match ty {
        ValueType::Undefined => return Ok(None),
        ValueType::Null => Value::Null,
        ValueType::Boolean => {
            Value::Bool(unsafe { v.cast::<bool>() }.map_err(|e| napi_failed(field, e))?)
        }
        ValueType::String => {
            Value::String(unsafe { v.cast::<String>() }.map_err(|e| napi_failed(field, e))?)
        }
        ValueType::Number => {
            let n = unsafe { v.cast::<f64>() }.map_err(|e| napi_failed(field, e))?;
            number(n, field, numbers)?
        }
        ValueType::BigInt => {
            let b = unsafe { v.cast::<BigInt>() }.map_err(|e| napi_failed(field, e))?;
            let (i, lossless) = b.get_i64();
            if !lossless {
                return Err(invalid(field, "bigint out of the signed 64-bit range"));
            }
            Value::Number(i.into())
        }
        ValueType::Object => {
            let is_array = v.is_array().map_err(|e| napi_failed(field, e))?;
            let obj = unsafe { v.cast::<Object>() }.map_err(|e| napi_failed(field, e))?;
            if is_array {
                let len = obj.get_array_length().map_err(|e| napi_failed(field, e))?;
                let mut items = Vec::with_capacity(len as usize);
                for i in 0..len {
                    let path = format!("{field}[{i}]");
                    let item: Unknown = obj.get_element(i).map_err(|e| napi_failed(&path, e))?;
                    match walk(&item, &path, numbers, depth + 1)? {
                        Some(x) => items.push(x),
                        None => return Err(invalid(&path, "undefined is not a value")),
                    }
                }
                Value::Array(items)
            } else {
                if is_keyed_collection(v).map_err(|e| napi_failed(field, e))? {
                    // JSON would silently drop its entries: the tool would run with arguments
                    // the gate never saw.
                    return Err(invalid(
                        field,
                        "a Map or Set is not JSON (its entries would be dropped): pass a plain object or an array",
                    ));
                }
                let mut map = Map::new();
                for key in Object::keys(&obj).map_err(|e| napi_failed(field, e))? {
                    let path = if field.is_empty() {
                        key.clone()
                    } else {
                        format!("{field}.{key}")
                    };
                    let item: Unknown = obj
                        .get_named_property(&key)
                        .map_err(|e| napi_failed(&path, e))?;
                    if let Some(x) = walk(&item, &path, numbers, depth + 1)? {
                        map.insert(key, x);
                    }
                }
                Value::Object(map)
            }
        }
        other => {
            return Err(invalid(
                field,
                format!("a {other:?} cannot be sent to the authority"),
            ));
        }
    };
    Ok(Some(out))
}

/// Whether `v` is a `Map`, `Set`, `WeakMap` or `WeakSet` (of this realm).
fn is_keyed_collection(v: &Unknown<'_>) -> napi::Result<bool> {
    let env = napi::Env::from_raw(v.value().env);
    let global = env.get_global()?;
    for name in ["Map", "Set", "WeakMap", "WeakSet"] {
        let constructor: Unknown = global.get_named_property(name)?;
        if v.instanceof(constructor)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn number(n: f64, field: &str, numbers: Numbers) -> Result<Value, CyclesError> {
    if !n.is_finite() {
        return Err(invalid(
            field,
            "NaN and Infinity are not numbers the authority accepts",
        ));
    }
    let is_int = n.fract() == 0.0;
    let safe = n.abs() <= MAX_SAFE_INTEGER as f64;
    match numbers {
        Numbers::Integers if !is_int => Err(invalid(
            field,
            format!("{n} is not an integer (use a safe integer or a bigint)"),
        )),
        Numbers::Integers if !safe => Err(invalid(
            field,
            format!("{n} is above 2^53 and may have been rounded; pass a bigint"),
        )),
        _ if is_int && safe => Ok(Value::Number((n as i64).into())),
        _ => Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| invalid(field, "not a JSON number")),
    }
}

/// An options object (or `undefined`) as a map; anything else is `INVALID_REQUEST`.
/// Keys in `skip` are left out (native objects the caller reads itself).
pub fn object(
    v: Option<&Unknown<'_>>,
    field: &str,
    free_form: &[&str],
    skip: &[&str],
) -> Result<Map<String, Value>, CyclesError> {
    let Some(v) = v else {
        return Ok(Map::new());
    };
    let ty = v.get_type().map_err(|e| napi_failed(field, e))?;
    match ty {
        ValueType::Undefined | ValueType::Null => return Ok(Map::new()),
        ValueType::Object if !v.is_array().map_err(|e| napi_failed(field, e))? => {}
        _ => return Err(invalid(field, "expected an object")),
    }
    let obj = unsafe { v.cast::<Object>() }.map_err(|e| napi_failed(field, e))?;
    let mut map = Map::new();
    for key in Object::keys(&obj).map_err(|e| napi_failed(field, e))? {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let path = if field.is_empty() {
            key.clone()
        } else {
            format!("{field}.{key}")
        };
        let item: Unknown = obj
            .get_named_property(&key)
            .map_err(|e| napi_failed(&path, e))?;
        // Tool arguments and grants are the caller's JSON; everything else is a request field.
        let numbers = if free_form.contains(&key.as_str()) {
            Numbers::Json
        } else {
            Numbers::Integers
        };
        if let Some(x) = walk(&item, &path, numbers, 1)? {
            map.insert(key, x);
        }
    }
    Ok(map)
}

/// A request object via `JSON.stringify` when its text is exact ([`crate::fast`]); `None`
/// when it is not, or is not an object.
pub fn object_fast(v: &Unknown<'_>) -> Option<Map<String, Value>> {
    let value = v.value();
    // SAFETY: a live handle of the current call.
    let text = unsafe { crate::fast::stringify(value.env, value.value) }?;
    let map: Map<String, Value> = serde_json::from_str(&text).ok()?;
    // Deep nesting is the walker's to refuse (with its message), not JSON's to accept.
    (!map.values().any(|v| deeper_than(v, MAX_DEPTH - 1))).then_some(map)
}

/// Whether `v` nests containers more than `levels` deep.
pub fn deeper_than(v: &Value, levels: usize) -> bool {
    match v {
        Value::Array(items) => levels == 0 || items.iter().any(|x| deeper_than(x, levels - 1)),
        Value::Object(map) => levels == 0 || map.values().any(|x| deeper_than(x, levels - 1)),
        _ => false,
    }
}

/// A property of an options object, unconverted (`None` when absent or `undefined`).
pub fn property<'a>(
    v: Option<&Unknown<'a>>,
    key: &str,
) -> Result<Option<Unknown<'a>>, CyclesError> {
    let Some(v) = v else { return Ok(None) };
    if v.get_type().map_err(|e| napi_failed(key, e))? != ValueType::Object {
        return Ok(None);
    }
    let obj = unsafe { v.cast::<Object>() }.map_err(|e| napi_failed(key, e))?;
    let item: Unknown = obj
        .get_named_property(key)
        .map_err(|e| napi_failed(key, e))?;
    match item.get_type().map_err(|e| napi_failed(key, e))? {
        ValueType::Undefined => Ok(None),
        _ => Ok(Some(item)),
    }
}

/// Where a JS key goes in the core's JSON shape.
pub enum Dest {
    /// A top-level core field.
    Top(&'static str),
    /// A field of the core's `call` object (`ToolCall`: name, kind, tags, args).
    Call(&'static str),
}

/// The JS fields of a call-shaped request (decide, reserve, event) and where they go.
pub const CALL_FIELDS: &[(&str, Dest)] = &[
    ("subject", Dest::Top("subject")),
    ("tool", Dest::Call("name")),
    ("args", Dest::Call("args")),
    ("kind", Dest::Call("kind")),
    ("tags", Dest::Call("tags")),
];

/// Renames JS keys to core fields; a key not listed is `INVALID_REQUEST` (a typo such as
/// `ttl` instead of `ttlMs` must not be silently ignored).
pub fn rename(
    mut js: Map<String, Value>,
    field: &str,
    fields: &[&[(&str, Dest)]],
) -> Result<Value, CyclesError> {
    let mut top = Map::new();
    let mut call = Map::new();
    for (key, value) in std::mem::take(&mut js) {
        let dest = fields
            .iter()
            .flat_map(|f| f.iter())
            .find(|(k, _)| *k == key)
            .map(|(_, d)| d);
        match dest {
            Some(Dest::Top(name)) => {
                top.insert((*name).to_string(), value);
            }
            Some(Dest::Call(name)) => {
                call.insert((*name).to_string(), value);
            }
            None => {
                let known: Vec<&str> = fields
                    .iter()
                    .flat_map(|f| f.iter())
                    .map(|(k, _)| *k)
                    .collect();
                let path = if field.is_empty() {
                    key.clone()
                } else {
                    format!("{field}.{key}")
                };
                return Err(invalid(
                    &path,
                    format!("unknown field; expected one of {}", known.join(", ")),
                ));
            }
        }
    }
    if !call.is_empty() {
        top.insert("call".to_string(), Value::Object(call));
    }
    Ok(Value::Object(top))
}

/// Deserializes a renamed request into a core type; serde's complaint becomes `INVALID_REQUEST`.
pub fn parse<T: serde::de::DeserializeOwned>(v: Value, field: &str) -> Result<T, CyclesError> {
    serde_json::from_value(v).map_err(|e| invalid(field, e.to_string()))
}

/// A string argument, or `INVALID_REQUEST`.
pub fn string(v: &Unknown<'_>, field: &str) -> Result<String, CyclesError> {
    match to_json(v, field, Numbers::Integers)? {
        Some(Value::String(s)) => Ok(s),
        _ => Err(invalid(field, "expected a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_integers_or_rejected_in_request_fields() {
        assert_eq!(number(5.0, "a", Numbers::Integers).unwrap(), Value::from(5));
        assert_eq!(
            number(MAX_SAFE_INTEGER as f64, "a", Numbers::Integers).unwrap(),
            Value::from(MAX_SAFE_INTEGER)
        );
        for bad in [0.5, f64::NAN, f64::INFINITY, 2f64.powi(53) + 2.0, -1e300] {
            let e = number(bad, "estimate[0].amount", Numbers::Integers).unwrap_err();
            assert_eq!(e.code(), "INVALID_REQUEST", "{bad}");
            assert!(e.to_string().contains("estimate[0].amount"), "{e}");
        }
    }

    #[test]
    fn tool_arguments_keep_fractions_but_not_nan() {
        assert_eq!(
            number(0.25, "args.t", Numbers::Json).unwrap(),
            Value::from(0.25)
        );
        assert_eq!(
            number(-3.0, "args.t", Numbers::Json).unwrap(),
            Value::from(-3)
        );
        assert!(number(f64::NAN, "args.t", Numbers::Json).is_err());
    }

    #[test]
    fn nesting_depth_is_measured_in_containers() {
        let mut v = Value::from(1);
        for _ in 0..5 {
            v = serde_json::json!({ "d": v });
        }
        assert!(deeper_than(&v, 4));
        assert!(!deeper_than(&v, 5));
    }

    #[test]
    fn rename_moves_call_fields_and_rejects_unknown_keys() {
        let mut js = Map::new();
        js.insert("tool".into(), Value::from("read_file"));
        js.insert("subject".into(), serde_json::json!({"agent": "bot"}));
        js.insert("ttlMs".into(), Value::from(2000));
        let extra: &[(&str, Dest)] = &[("ttlMs", Dest::Top("ttl_ms"))];
        let v = rename(js.clone(), "", &[CALL_FIELDS, extra]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"subject": {"agent": "bot"}, "call": {"name": "read_file"}, "ttl_ms": 2000})
        );
        js.insert("ttl".into(), Value::from(1));
        let e = rename(js, "", &[CALL_FIELDS, extra]).unwrap_err();
        assert_eq!(e.code(), "INVALID_REQUEST");
        assert!(e.to_string().contains("ttl"), "{e}");
    }
}

//! Python values <-> JSON values, strictly.
//!
//! The core's requests deserialize from JSON, so the binding converts Python arguments to a
//! `serde_json::Value` and lets serde and the core's `validate()` decide what is acceptable.
//! The conversion itself only refuses what JSON cannot say exactly: NaN and infinities,
//! integers outside i64, non-string dict keys, and types that are not JSON (bytes, sets,
//! arbitrary objects). A float is a JSON number here; the core's `i64` fields refuse it.

use cycles_core::CyclesError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Deepest nesting accepted; also stops self-referencing containers.
const MAX_DEPTH: usize = 64;

/// A conversion failure with the path to the offending value (innermost first while unwinding).
struct ConvErr {
    path: Vec<String>,
    message: String,
}

impl ConvErr {
    fn new(message: impl Into<String>) -> Self {
        ConvErr {
            path: Vec::new(),
            message: message.into(),
        }
    }
    fn at(mut self, part: String) -> Self {
        self.path.push(part);
        self
    }
}

/// Converts a Python value to JSON; `field` names it in the error (`args`, `subject`, ...).
pub(crate) fn to_json(obj: &Bound<'_, PyAny>, field: &str) -> Result<Value, CyclesError> {
    convert(obj, 0).map_err(|e| {
        let mut path = field.to_string();
        for part in e.path.iter().rev() {
            path.push_str(part);
        }
        CyclesError::invalid(path, e.message)
    })
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn convert(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, ConvErr> {
    if depth > MAX_DEPTH {
        return Err(ConvErr::new(format!(
            "nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: bool is a subclass of int in Python.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        return obj
            .extract::<i64>()
            .map(|i| Value::Number(i.into()))
            .map_err(|_| {
                ConvErr::new("integers must fit a signed 64-bit integer (-2**63 .. 2**63-1)")
            });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| ConvErr::new(format!("{v} is not a finite number")));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s
            .to_cow()
            .map(|s| Value::String(s.into_owned()))
            .map_err(|_| ConvErr::new("strings must be valid Unicode (no lone surrogates)"));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key = dict_key(&k)?;
            let value = convert(&v, depth + 1).map_err(|e| e.at(format!(".{key}")))?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return seq(l.iter(), depth);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return seq(t.iter(), depth);
    }
    // Other mappings (MappingProxyType, user Mapping classes): read through items().
    if let Ok(m) = obj.cast::<PyMapping>() {
        let items = m
            .items()
            .map_err(|e| ConvErr::new(format!("mapping items() failed: {e}")))?;
        let mut map = Map::new();
        for item in items.iter() {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item
                .extract()
                .map_err(|e| ConvErr::new(format!("mapping items() failed: {e}")))?;
            let key = dict_key(&k)?;
            let value = convert(&v, depth + 1).map_err(|e| e.at(format!(".{key}")))?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    Err(ConvErr::new(format!(
        "values of type {} cannot be passed (use str, int, float, bool, None, list, tuple or dict)",
        type_name(obj)
    )))
}

fn dict_key(k: &Bound<'_, PyAny>) -> Result<String, ConvErr> {
    let s = k.cast::<PyString>().map_err(|_| {
        ConvErr::new(format!(
            "dict keys must be str, not {} ({})",
            type_name(k),
            k.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    s.to_cow()
        .map(|s| s.into_owned())
        .map_err(|_| ConvErr::new("dict keys must be valid Unicode"))
}

fn seq<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
) -> Result<Value, ConvErr> {
    let mut out = Vec::new();
    for (i, v) in items.enumerate() {
        out.push(convert(&v, depth + 1).map_err(|e| e.at(format!("[{i}]")))?);
    }
    Ok(Value::Array(out))
}

/// Converts a JSON value to Python (dicts, lists, str, int, float, bool, None).
pub(crate) fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for x in a {
                list.append(to_py(py, x)?)?;
            }
            list.into_any()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, x) in m {
                d.set_item(k, to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// Converts an amount list: a mapping `{unit: amount}` or a list of `{"unit", "amount"}`
/// objects (the core's JSON form) both become the core's list form.
pub(crate) fn amounts_to_json(obj: &Bound<'_, PyAny>, field: &str) -> Result<Value, CyclesError> {
    let v = to_json(obj, field)?;
    Ok(match v {
        Value::Object(map) => Value::Array(
            map.into_iter()
                .map(|(unit, amount)| {
                    let mut m = Map::new();
                    m.insert("unit".into(), Value::String(unit));
                    m.insert("amount".into(), amount);
                    Value::Object(m)
                })
                .collect(),
        ),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_py<F: for<'py> FnOnce(Python<'py>)>(f: F) {
        Python::initialize();
        Python::attach(f)
    }

    #[test]
    fn converts_nested_values_and_refuses_what_json_cannot_say() {
        with_py(|py| {
            let v = py
                .eval(
                    c"{'a': [1, 2.5, True, None, 'x', (3,)], 'b': {'c': -9223372036854775808}}",
                    None,
                    None,
                )
                .unwrap();
            let j = to_json(&v, "args").unwrap();
            assert_eq!(
                j,
                serde_json::json!({"a": [1, 2.5, true, null, "x", [3]], "b": {"c": i64::MIN}})
            );
            for (src, path) in [
                (c"{'a': [1, 2**63]}", "args.a[1]"),
                (c"{'a': float('nan')}", "args.a"),
                (c"{1: 'x'}", "args"),
                (c"{'s': {1, 2}}", "args.s"),
                (c"{'b': b'x'}", "args.b"),
            ] {
                let v = py.eval(src, None, None).unwrap();
                let err = to_json(&v, "args").unwrap_err();
                assert_eq!(err.code(), "INVALID_REQUEST");
                match err {
                    CyclesError::InvalidRequest { field, .. } => assert_eq!(field, path),
                    other => panic!("{other:?}"),
                }
            }
        })
    }

    #[test]
    fn amounts_accept_mapping_or_list_and_round_trip() {
        with_py(|py| {
            let v = py
                .eval(c"{'RISK_POINTS': 5, 'TOKENS': 10}", None, None)
                .unwrap();
            let j = amounts_to_json(&v, "estimate").unwrap();
            assert_eq!(
                j,
                serde_json::json!([{"unit": "RISK_POINTS", "amount": 5}, {"unit": "TOKENS", "amount": 10}])
            );
            let back = to_py(py, &j).unwrap();
            assert_eq!(to_json(&back, "x").unwrap(), j);
        })
    }
}

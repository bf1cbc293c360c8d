//! The one mapping between Python values and JSON (`serde_json::Value`).
//!
//! | Python | JSON |
//! |---|---|
//! | `None` | `null` |
//! | `bool` | `true` / `false` (never `1` / `0`) |
//! | `int` within `-2**63 .. 2**64-1` | number (an integer) |
//! | `int` outside that range | refused: JSON consumers lose precision; send a string |
//! | `float` (finite) | number; `nan` and infinities are refused |
//! | `str` | string |
//! | `list`, `tuple` | array |
//! | `dict` with `str` keys | object; any other key type is refused |
//! | anything else | refused, naming the path (`event.items[2].when: unsupported type datetime`) |
//!
//! JSON to Python is the inverse: integers become `int`, other numbers `float`.

use std::fmt::Write as _;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Deeper values are refused (a cycle would otherwise recurse forever).
pub(crate) const MAX_DEPTH: usize = 128;

/// A conversion failure: the path of the offending value and what is wrong.
#[derive(Debug)]
pub(crate) struct ConvertError {
    pub(crate) path: String,
    pub(crate) problem: String,
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl From<ConvertError> for PyErr {
    fn from(error: ConvertError) -> Self {
        crate::errors::ConversionError::new_err(error.to_string())
    }
}

/// The path is built only on failure, while unwinding, so the common case
/// allocates nothing for it.
enum Segment {
    Key(String),
    Index(usize),
}

struct Failure {
    /// Innermost segment first.
    segments: Vec<Segment>,
    problem: String,
}

impl Failure {
    fn new(problem: String) -> Self {
        Self {
            segments: Vec::new(),
            problem,
        }
    }

    fn at(mut self, segment: Segment) -> Self {
        self.segments.push(segment);
        self
    }
}

/// Converts a Python value to JSON; `root` names the value in errors
/// (`event`, `payload`, `result`).
pub(crate) fn to_value(object: &Bound<'_, PyAny>, root: &str) -> Result<Value, ConvertError> {
    convert(object, 0).map_err(|failure| {
        let mut path = root.to_owned();
        for segment in failure.segments.iter().rev() {
            match segment {
                Segment::Key(key) => {
                    let _ = write!(path, ".{key}");
                }
                Segment::Index(index) => {
                    let _ = write!(path, "[{index}]");
                }
            }
        }
        ConvertError {
            path,
            problem: failure.problem,
        }
    })
}

fn type_name(object: &Bound<'_, PyAny>) -> String {
    object
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |name| name.to_string())
}

fn convert(object: &Bound<'_, PyAny>, depth: usize) -> Result<Value, Failure> {
    if depth > MAX_DEPTH {
        return Err(Failure::new(format!(
            "nested deeper than {MAX_DEPTH} levels (a cycle?)"
        )));
    }
    if object.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: `True` is an `int` in Python and must stay a boolean.
    if let Ok(boolean) = object.cast::<PyBool>() {
        return Ok(Value::Bool(boolean.is_true()));
    }
    if let Ok(string) = object.cast::<PyString>() {
        let text = string
            .to_cow()
            .map_err(|_| Failure::new("string is not valid UTF-8 (lone surrogate)".to_owned()))?;
        return Ok(Value::String(text.into_owned()));
    }
    if object.is_instance_of::<PyInt>() {
        if let Ok(small) = object.extract::<i64>() {
            return Ok(Value::Number(small.into()));
        }
        if let Ok(large) = object.extract::<u64>() {
            return Ok(Value::Number(large.into()));
        }
        let shown = object
            .str()
            .map_or_else(|_| "?".to_owned(), |s| s.to_string());
        return Err(Failure::new(format!(
            "integer {shown} does not fit in 64 bits (JSON readers lose precision; send it as a string)"
        )));
    }
    if let Ok(float) = object.cast::<PyFloat>() {
        let value = float.value();
        return Number::from_f64(value).map(Value::Number).ok_or_else(|| {
            Failure::new(format!(
                "float {} is not valid JSON (NaN and infinities are refused)",
                python_float(value)
            ))
        });
    }
    if let Ok(dict) = object.cast::<PyDict>() {
        let mut map = Map::with_capacity(dict.len());
        for (key, value) in dict.iter() {
            let Ok(key) = key.cast::<PyString>() else {
                let shown = key
                    .repr()
                    .map_or_else(|_| "?".to_owned(), |s| s.to_string());
                return Err(Failure::new(format!(
                    "dict key {shown} ({}) is not a string",
                    type_name(&key)
                )));
            };
            let key = key
                .to_cow()
                .map_err(|_| Failure::new("dict key is not valid UTF-8".to_owned()))?
                .into_owned();
            match convert(&value, depth + 1) {
                Ok(converted) => {
                    map.insert(key, converted);
                }
                Err(failure) => return Err(failure.at(Segment::Key(key))),
            }
        }
        return Ok(Value::Object(map));
    }
    if let Ok(list) = object.cast::<PyList>() {
        let mut items = Vec::with_capacity(list.len());
        for (index, item) in list.iter().enumerate() {
            items.push(convert(&item, depth + 1).map_err(|f| f.at(Segment::Index(index)))?);
        }
        return Ok(Value::Array(items));
    }
    if let Ok(tuple) = object.cast::<PyTuple>() {
        let mut items = Vec::with_capacity(tuple.len());
        for (index, item) in tuple.iter().enumerate() {
            items.push(convert(&item, depth + 1).map_err(|f| f.at(Segment::Index(index)))?);
        }
        return Ok(Value::Array(items));
    }
    Err(Failure::new(format!(
        "unsupported type {}",
        type_name(object)
    )))
}

fn python_float(value: f64) -> &'static str {
    if value.is_nan() {
        "nan"
    } else if value > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// Converts JSON to Python.
pub(crate) fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                let f = n
                    .as_f64()
                    .ok_or_else(|| PyValueError::new_err("number out of range"))?;
                PyFloat::new(py, f).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => to_python_dict(py, map)?.into_any(),
    })
}

/// Converts a JSON object to a Python `dict`.
pub(crate) fn to_python_dict<'py>(
    py: Python<'py>,
    map: &Map<String, Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in map {
        dict.set_item(key, to_python(py, value)?)?;
    }
    Ok(dict)
}

//! Building a call's base key (`name|a=1 b='x'`) from Python arguments, as
//! COMPAT.md specifies. Everything that depends only on the function's
//! signature is worked out once, when the function is decorated.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};

use super::errors::CacheKeyCollisionWarning;
use super::keytext::KeyText;

struct Param {
    name: String,
    default: Option<Py<PyAny>>,
    /// Dropped by name: `self`, `cls`, `_`-names, `exclude`.
    dropped: bool,
    /// Named in `keep_in_key`: kept even when its value looks like a
    /// connection.
    keep: bool,
    /// A connection-like value of it was left out and the user was told.
    warned: AtomicBool,
}

/// The signature facts key building needs.
pub struct KeyPlan {
    params: Vec<Param>,
    /// Indices of the kept parameters, sorted by name.
    sorted_kept: Vec<usize>,
    exclude: Vec<String>,
    keep: Vec<String>,
    /// `module.qualname` of the function, for warnings.
    owner: String,
    /// Extra arguments (`*args`, `**kwargs`) the user was told about.
    warned_extra: Mutex<HashSet<String>>,
}

impl KeyPlan {
    /// `params` are the function's positional parameter names in order
    /// (`getfullargspec(fn).args`) with their defaults, if any; `keep`
    /// names the parameters kept in the key even when their value looks
    /// like a database connection; `owner` names the function in warnings.
    pub fn new(
        params: Vec<(String, Option<Py<PyAny>>)>,
        exclude: Vec<String>,
        keep: Vec<String>,
        owner: String,
    ) -> Self {
        let params: Vec<Param> = params
            .into_iter()
            .map(|(name, default)| Param {
                dropped: drops_name(&name, &exclude),
                keep: keep.contains(&name),
                warned: AtomicBool::new(false),
                name,
                default,
            })
            .collect();
        let mut sorted_kept: Vec<usize> =
            (0..params.len()).filter(|&i| !params[i].dropped).collect();
        sorted_kept.sort_by(|&a, &b| params[a].name.cmp(&params[b].name));
        Self {
            params,
            sorted_kept,
            exclude,
            keep,
            owner,
            warned_extra: Mutex::new(HashSet::new()),
        }
    }

    /// Append `k=repr(v)` pairs, space separated and sorted by name, for a
    /// call with positional `args` and keyword `kwargs` (already stripped of
    /// the `_skip_cache`/`_overwrite_cache` flags).
    pub fn write_params<'py>(
        &self,
        py: Python<'py>,
        out: &mut KeyText,
        args: &[Bound<'py, PyAny>],
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<()> {
        let mut first = true;
        self.for_each_kept(py, args, kwargs, |name, value| {
            write_pair(out, &mut first, name, value)
        })
    }

    /// The call's key arguments (after exclusions) as a dict, for the
    /// `ttl`, `cache_if` and `validate` callables that take them.
    pub fn key_args<'py>(
        &self,
        py: Python<'py>,
        args: &[Bound<'py, PyAny>],
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        self.for_each_kept(py, args, kwargs, |name, value| dict.set_item(name, value))?;
        Ok(dict)
    }

    /// `emit(name, value)` for each argument the key keeps, sorted by name.
    #[inline]
    fn for_each_kept<'py>(
        &self,
        py: Python<'py>,
        args: &[Bound<'py, PyAny>],
        kwargs: Option<&Bound<'py, PyDict>>,
        mut emit: impl FnMut(&str, &Bound<'py, PyAny>) -> PyResult<()>,
    ) -> PyResult<()> {
        let kwargs = kwargs.filter(|k| !k.is_empty());
        if kwargs.is_none() && args.len() <= self.params.len() {
            // Fast path: the order is known from decoration time.
            for &i in &self.sorted_kept {
                let p = &self.params[i];
                let value = match args.get(i) {
                    Some(v) => v.clone(),
                    None => match &p.default {
                        Some(d) => d.bind(py).clone(),
                        None => continue,
                    },
                };
                if !p.keep {
                    if let Some(why) = connection_reason(&value)? {
                        if !p.warned.swap(true, Ordering::Relaxed) {
                            self.warn_left_out(py, &p.name, &why)?;
                        }
                        continue;
                    }
                }
                emit(&p.name, &value)?;
            }
            return Ok(());
        }
        self.for_each_kept_general(py, args, kwargs, emit)
    }

    fn for_each_kept_general<'py>(
        &self,
        py: Python<'py>,
        args: &[Bound<'py, PyAny>],
        kwargs: Option<&Bound<'py, PyDict>>,
        mut emit: impl FnMut(&str, &Bound<'py, PyAny>) -> PyResult<()>,
    ) -> PyResult<()> {
        let mut pairs: Vec<(String, Bound<'py, PyAny>, bool)> = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            let value = match args.get(i) {
                Some(v) => Some(v.clone()),
                None => p.default.as_ref().map(|d| d.bind(py).clone()),
            };
            if let Some(v) = value {
                pairs.push((p.name.clone(), v, p.dropped));
            }
        }
        for (n, v) in args.iter().enumerate().skip(self.params.len()) {
            let name = format!("vararg{}", n - self.params.len() + 1);
            let dropped = drops_name(&name, &self.exclude);
            pairs.push((name, v.clone(), dropped));
        }
        if let Some(kwargs) = kwargs {
            for (k, v) in kwargs.iter() {
                let name: String = k.extract()?;
                let dropped = drops_name(&name, &self.exclude);
                match pairs.iter_mut().find(|(n, _, _)| *n == name) {
                    Some(slot) => slot.1 = v,
                    None => pairs.push((name, v, dropped)),
                }
            }
        }
        pairs.retain(|(_, _, dropped)| !dropped);
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, value, _) in &pairs {
            if !self.keep.contains(name) {
                if let Some(why) = connection_reason(value)? {
                    self.left_out(py, name, &why)?;
                    continue;
                }
            }
            emit(name, value)?;
        }
        Ok(())
    }

    /// A connection-like value of `name` was left out: tell the user, once
    /// per parameter.
    fn left_out(&self, py: Python<'_>, name: &str, why: &str) -> PyResult<()> {
        if let Some(p) = self.params.iter().find(|p| p.name == name) {
            if p.warned.swap(true, Ordering::Relaxed) {
                return Ok(());
            }
        } else if !self.warned_extra.lock().insert(name.to_owned()) {
            return Ok(());
        }
        self.warn_left_out(py, name, why)
    }

    /// The warning itself: which argument, why, and the two ways to silence it.
    #[cold]
    fn warn_left_out(&self, py: Python<'_>, name: &str, why: &str) -> PyResult<()> {
        let message = format!(
            "cachu: argument '{name}' of {} is left out of the cache key because its value \
             looks like a database connection ({why}), so calls that differ only in it share \
             one cached value; pass exclude={{{name:?}}} to @cache to leave it out without \
             this warning, or keep_in_key={{{name:?}}} to keep it in the key",
            self.owner
        );
        let category = py.get_type::<CacheKeyCollisionWarning>();
        let message =
            std::ffi::CString::new(message.replace('\0', "")).expect("no NUL left in the message");
        PyErr::warn(py, &category, &message, 1)
    }
}

/// The `(name, repr(value))` pairs a key would hold for these keyword
/// arguments alone, sorted by name: names and values the key leaves out
/// (`self`, `_`-names, `exclude`, connections unless in `keep`) are left
/// out here too.
pub fn kept_pairs(
    kwargs: &Bound<'_, PyDict>,
    exclude: &[String],
    keep: &[String],
) -> PyResult<Vec<(String, String)>> {
    let mut pairs = Vec::with_capacity(kwargs.len());
    for (k, v) in kwargs.iter() {
        let name: String = k.extract()?;
        if drops_name(&name, exclude) || (!keep.contains(&name) && connection_reason(&v)?.is_some())
        {
            continue;
        }
        let mut rendered = KeyText::default();
        write_repr(&mut rendered, &v)?;
        pairs.push((name, rendered.to_string()));
    }
    pairs.sort();
    Ok(pairs)
}

fn drops_name(name: &str, exclude: &[String]) -> bool {
    name == "self" || name == "cls" || name.starts_with('_') || exclude.iter().any(|e| e == name)
}

#[inline]
fn write_pair(
    out: &mut KeyText,
    first: &mut bool,
    name: &str,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if !*first {
        out.push(' ');
    }
    *first = false;
    out.push_str(name);
    out.push('=');
    write_repr(out, value)
}

/// Why `v` looks like a database connection, if it does: checked as the
/// reference does (attributes, then the type's name); builtin values never
/// do.
#[inline]
fn connection_reason(v: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    // On every argument of every call: type pointers only, the common
    // types first.
    let t = v.get_type_ptr();
    let builtin = {
        t == &raw mut ffi::PyLong_Type
            || t == &raw mut ffi::PyUnicode_Type
            || v.is_none()
            || t == &raw mut ffi::PyFloat_Type
            || t == &raw mut ffi::PyBool_Type
            || t == &raw mut ffi::PyTuple_Type
            || t == &raw mut ffi::PyBytes_Type
            || t == &raw mut ffi::PyList_Type
            || t == &raw mut ffi::PyDict_Type
            || t == &raw mut ffi::PySet_Type
            || t == &raw mut ffi::PyFrozenSet_Type
            || t == &raw mut ffi::PyComplex_Type
    };
    if builtin {
        return Ok(None);
    }
    connection_reason_of_object(v)
}

#[cold]
fn connection_reason_of_object(v: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    let py = v.py();
    for attr in [
        intern!(py, "driver_connection"),
        intern!(py, "dialect"),
        intern!(py, "engine"),
    ] {
        if v.hasattr(attr)? {
            return Ok(Some(format!(
                "it has an attribute named {:?}",
                attr.to_cow()?
            )));
        }
    }
    let type_str = v.get_type().str()?;
    let type_str = type_str.to_cow()?;
    Ok(["Connection", "Engine", "psycopg", "pyodbc", "sqlite3"]
        .iter()
        .find(|s| type_str.contains(*s))
        .map(|s| format!("its type {type_str} contains {s:?}")))
}

/// Append `repr(v)`, computing the common cases without calling Python.
#[inline]
pub fn write_repr(out: &mut KeyText, v: &Bound<'_, PyAny>) -> PyResult<()> {
    if v.is_exact_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            out.push_str(itoa::Buffer::new().format(i));
            return Ok(());
        }
    } else if v.is_exact_instance_of::<PyString>() {
        let s = v.cast::<PyString>()?;
        if let Ok(text) = s.to_str() {
            if write_plain_str_repr(out, text) {
                return Ok(());
            }
        }
    } else if v.is_none() {
        out.push_str("None");
        return Ok(());
    } else if v.is_exact_instance_of::<PyBool>() {
        out.push_str(if v.is_truthy()? { "True" } else { "False" });
        return Ok(());
    }
    out.push_str(&v.repr()?.to_cow()?);
    Ok(())
}

/// Python's `repr` of a printable-ASCII string; false (nothing written) if
/// the string needs Python's own rules.
#[inline]
fn write_plain_str_repr(out: &mut KeyText, s: &str) -> bool {
    if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    // Python quotes with ' unless the text has ' and no ".
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.reserve(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        if c == '\\' || c == quote {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(quote);
    true
}

#[cfg(test)]
mod tests {
    use super::write_plain_str_repr;
    use crate::python::keytext::KeyText;

    fn r(s: &str) -> String {
        let mut o = KeyText::default();
        assert!(write_plain_str_repr(&mut o, s));
        o.to_string()
    }

    #[test]
    fn str_repr_matches_python() {
        assert_eq!(r("abc"), "'abc'");
        assert_eq!(r("it's"), "\"it's\"");
        assert_eq!(r("say \"hi\""), "'say \"hi\"'");
        assert_eq!(r("both ' and \""), "'both \\' and \"'");
        assert_eq!(r("back\\slash"), "'back\\\\slash'");
        assert!(!write_plain_str_repr(&mut KeyText::default(), "tab\t"));
        assert!(!write_plain_str_repr(&mut KeyText::default(), "é"));
    }
}

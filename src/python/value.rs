//! How a Python result is kept in the memory store, and handed back.
//!
//! The contract (COMPAT.md) is pickle semantics: a caller mutating a returned
//! value never changes the cache, and a value that cannot be pickled is an
//! error. Pickling on every hit is slow, so values are sorted once, at store:
//! - immutable builtins (None, bool, int, float, complex, str, bytes, and
//!   tuples/frozensets of those) are shared as they are;
//! - plain containers (dict, list, set, tuple) of such values are kept as a
//!   private deep copy, and each hit returns a fresh deep copy of it;
//! - anything else is pickled, and each hit unpickles.
//!
//! Only exact builtin types take the first two paths, so no user code runs
//! while copying, and the first two paths can never fail to pickle.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple,
};

/// Deeper structures than this are pickled instead of copied.
const MAX_DEPTH: u32 = 32;

/// A value as the memory store keeps it: a tag and one pointer (16 bytes,
/// which a growing store writes once per entry).
pub enum Stored {
    Shared(Py<PyAny>),
    /// A private copy whose members are all immutable: a shallow copy of it
    /// is a deep one.
    Flat(Py<PyAny>),
    /// A private copy with containers inside: each hit copies it deeply.
    Deep(Py<PyAny>),
    /// The pickle, kept as the bytes object `pickle.loads` reads on a hit.
    Pickled(Py<PyBytes>),
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Stored>() == 16);

impl Stored {
    /// A cheap handle to the same value, taken under the store's lock (it
    /// runs no Python code); `into_value` then runs after the lock is gone.
    #[inline]
    pub fn fetch(&self, py: Python<'_>) -> Stored {
        match self {
            Stored::Shared(o) => Stored::Shared(o.clone_ref(py)),
            Stored::Flat(o) => Stored::Flat(o.clone_ref(py)),
            Stored::Deep(o) => Stored::Deep(o.clone_ref(py)),
            Stored::Pickled(b) => Stored::Pickled(b.clone_ref(py)),
        }
    }

    /// Prepare `value` for storing: share, copy or pickle it. Also returns
    /// what it weighs, in bytes, for the store's byte bound: the pickle's
    /// length, or for values kept as objects an estimate (see [`Snapshot`]).
    pub fn prepare(value: &Bound<'_, PyAny>) -> PyResult<(Stored, u64)> {
        // One walk finds both how to keep the value and what it weighs.
        Ok(match snapshot(value, 0)? {
            Snapshot::Same(weight) => (Stored::Shared(value.clone().unbind()), weight),
            Snapshot::Copy(copy, true, weight) => (Stored::Flat(copy.unbind()), weight),
            Snapshot::Copy(copy, false, weight) => (Stored::Deep(copy.unbind()), weight),
            Snapshot::Other => {
                let data = dumps_object(value)?;
                let weight = data.as_bytes().len() as u64;
                (Stored::Pickled(data.unbind()), weight)
            }
        })
    }

    /// The value for the caller. `Err` only if unpickling fails.
    #[inline]
    pub fn into_value(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Stored::Shared(o) => Ok(o),
            Stored::Flat(o) => Ok(shallow_copy(o.bind(py))?.unbind()),
            Stored::Deep(o) => Ok(deep_copy(o.bind(py))?.unbind()),
            Stored::Pickled(b) => Ok(loads_object(b.bind(py))?.unbind()),
        }
    }
}

/// What storing a value takes, found in one walk over it, with what the
/// value kept weighs.
///
/// What a value kept as objects weighs: CPython's own sizes on a 64-bit
/// build, close to `sys.getsizeof`, summed over the containers and their
/// members, computed once when the value is stored (in the same walk that
/// decides how it is kept):
/// - `None`, `True`, `False`: 0 (shared singletons);
/// - `int` 32, `float` 24, `complex` 32;
/// - `str` 49 + its length, `bytes` 33 + its length;
/// - `tuple` 40 + 8 per item, `list` 56 + 8 per item, `dict` 64 + 40 per
///   item, `set` and `frozenset` 200 + 16 per item, plus the items.
///
/// Strings shared with other values, or by several members of one value,
/// count once per place that holds them. Anything else is pickled, and
/// weighs its pickle's length.
enum Snapshot<'py> {
    /// Immutable all the way down: share it.
    Same(u64),
    /// Plain containers of immutables: this private deep copy, and whether
    /// its members are all immutable (then a shallow copy is a deep one).
    Copy(Bound<'py, PyAny>, bool, u64),
    /// Anything else: pickle it.
    Other,
}

#[inline]
fn is_scalar(v: &Bound<'_, PyAny>) -> bool {
    v.is_none()
        || v.is_exact_instance_of::<PyInt>()
        || v.is_exact_instance_of::<PyString>()
        || v.is_exact_instance_of::<PyFloat>()
        || v.is_exact_instance_of::<PyBool>()
        || v.is_exact_instance_of::<PyBytes>()
        || v.is_exact_instance_of::<PyComplex>()
}

/// The weight of an immutable scalar, `None` for anything else.
///
/// Run on every member of every value stored: the type pointer is read
/// once, and the likeliest types come first.
#[inline]
fn scalar_weight(v: &Bound<'_, PyAny>) -> Option<u64> {
    let t = v.get_type_ptr();
    if t == &raw mut ffi::PyUnicode_Type {
        // SAFETY: an exact str (its type checked just above).
        let len = unsafe { ffi::PyUnicode_GET_LENGTH(v.as_ptr()) };
        return Some(49 + len as u64);
    }
    if t == &raw mut ffi::PyLong_Type {
        return Some(32);
    }
    if t == &raw mut ffi::PyFloat_Type {
        return Some(24);
    }
    if v.is_none() || t == &raw mut ffi::PyBool_Type {
        return Some(0);
    }
    if let Ok(b) = v.cast_exact::<PyBytes>() {
        return Some(33 + b.as_bytes().len() as u64);
    }
    if t == &raw mut ffi::PyComplex_Type {
        return Some(32);
    }
    None
}

/// What a member weighs if it can be shared as it is (scalars first,
/// without the call): `Ok(None)` if it cannot.
#[inline]
fn shared_weight(v: &Bound<'_, PyAny>, depth: u32) -> PyResult<Option<u64>> {
    if let Some(w) = scalar_weight(v) {
        return Ok(Some(w));
    }
    Ok(match snapshot(v, depth)? {
        Snapshot::Same(w) => Some(w),
        _ => None,
    })
}

/// `per` bytes for each of `n` items.
fn items(per: u64, n: usize) -> u64 {
    per * n as u64
}

fn snapshot<'py>(v: &Bound<'py, PyAny>, depth: u32) -> PyResult<Snapshot<'py>> {
    use Snapshot::{Copy, Other, Same};
    if let Some(weight) = scalar_weight(v) {
        return Ok(Same(weight));
    }
    if depth >= MAX_DEPTH {
        return Ok(Other);
    }
    let py = v.py();
    if let Ok(d) = v.cast_exact::<PyDict>() {
        // Copy the dict in C, then replace the members that need their own copy.
        let out = d.copy()?;
        let mut flat = true;
        let mut weight = 64 + items(40, d.len());
        for (k, val) in DictItems::of(d) {
            let Some(w) = shared_weight(&k, depth + 1)? else {
                return Ok(Other);
            };
            weight += w;
            if let Some(w) = scalar_weight(&val) {
                weight += w;
                continue;
            }
            match snapshot(&val, depth + 1)? {
                Same(w) => weight += w,
                Copy(c, _, w) => {
                    out.set_item(k, c)?;
                    flat = false;
                    weight += w;
                }
                Other => return Ok(Other),
            }
        }
        return Ok(Copy(out.into_any(), flat, weight));
    }
    if let Ok(l) = v.cast_exact::<PyList>() {
        let out = l.get_slice(0, l.len());
        let mut flat = true;
        let mut weight = 56 + items(8, l.len());
        for (i, item) in l.iter().enumerate() {
            if let Some(w) = scalar_weight(&item) {
                weight += w;
                continue;
            }
            match snapshot(&item, depth + 1)? {
                Same(w) => weight += w,
                Copy(c, _, w) => {
                    out.set_item(i, c)?;
                    flat = false;
                    weight += w;
                }
                Other => return Ok(Other),
            }
        }
        return Ok(Copy(out.into_any(), flat, weight));
    }
    if let Ok(t) = v.cast_exact::<PyTuple>() {
        let mut copies: Option<Vec<Bound<'py, PyAny>>> = None;
        let mut weight = 40 + items(8, t.len());
        for (i, item) in t.iter().enumerate() {
            match snapshot(&item, depth + 1)? {
                Same(w) => {
                    weight += w;
                    if let Some(c) = copies.as_mut() {
                        c.push(item);
                    }
                }
                Copy(c, _, w) => {
                    weight += w;
                    copies
                        .get_or_insert_with(|| t.iter().take(i).collect())
                        .push(c)
                }
                Other => return Ok(Other),
            }
        }
        return Ok(match copies {
            None => Same(weight),
            Some(items) => Copy(PyTuple::new(py, items)?.into_any(), false, weight),
        });
    }
    if let Ok(s) = v.cast_exact::<PyFrozenSet>() {
        // Set members are hashable; only immutable members keep it shareable.
        let mut weight = 200 + items(16, s.len());
        for item in s.iter() {
            let Same(w) = snapshot(&item, depth + 1)? else {
                return Ok(Other);
            };
            weight += w;
        }
        return Ok(Same(weight));
    }
    if let Ok(s) = v.cast_exact::<PySet>() {
        let mut weight = 200 + items(16, s.len());
        for item in s.iter() {
            let Same(w) = snapshot(&item, depth + 1)? else {
                return Ok(Other);
            };
            weight += w;
        }
        return Ok(Copy(PySet::new(py, s.iter())?.into_any(), true, weight));
    }
    Ok(Other)
}

/// A dict's items as borrowed references, straight from `PyDict_Next`:
/// PyO3's iterator takes a reference to each key and value and checks the
/// dict's size at each step, a fifth of the walk of a small result. Only
/// for dicts nothing changes while they are walked: `snapshot` runs no
/// Python code (exact builtin types only) and writes only to its copy.
/// (Replacing a member of the copy compares its key only with keys met
/// earlier in the walk, which it checked: a key inserted later lies further
/// along any probe sequence.)
struct DictItems<'a, 'py> {
    dict: &'a Bound<'py, PyDict>,
    pos: ffi::Py_ssize_t,
}

impl<'a, 'py> DictItems<'a, 'py> {
    fn of(dict: &'a Bound<'py, PyDict>) -> Self {
        Self { dict, pos: 0 }
    }
}

impl<'a, 'py> Iterator for DictItems<'a, 'py> {
    type Item = (Borrowed<'a, 'py, PyAny>, Borrowed<'a, 'py, PyAny>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (mut k, mut v) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: `dict` is alive for 'a and unchanged while walked (see
        // above), so the borrowed key and value stay alive as long.
        unsafe {
            if ffi::PyDict_Next(self.dict.as_ptr(), &mut self.pos, &mut k, &mut v) == 0 {
                return None;
            }
            let py = self.dict.py();
            Some((Borrowed::from_ptr(py, k), Borrowed::from_ptr(py, v)))
        }
    }
}

/// Copy of a flat template (a dict, list or set of immutables): the
/// container alone.
fn shallow_copy<'py>(v: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(d) = v.cast_exact::<PyDict>() {
        return Ok(d.copy()?.into_any());
    }
    if let Ok(l) = v.cast_exact::<PyList>() {
        return Ok(l.get_slice(0, l.len()).into_any());
    }
    deep_copy(v)
}

/// Deep copy of a value `snapshot` accepted: shares immutable leaves and
/// rebuilds containers. Dicts and lists are first copied shallowly in C
/// (`PyDict_Copy` copies the key table in one go), then only their mutable
/// members are replaced by copies.
fn deep_copy<'py>(v: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = v.py();
    if is_scalar(v) {
        return Ok(v.clone());
    }
    if let Ok(d) = v.cast_exact::<PyDict>() {
        let out = d.copy()?;
        for (k, val) in d.iter() {
            if !is_scalar(&val) {
                out.set_item(k, deep_copy(&val)?)?;
            }
        }
        return Ok(out.into_any());
    }
    if let Ok(l) = v.cast_exact::<PyList>() {
        let out = l.get_slice(0, l.len());
        for (i, item) in l.iter().enumerate() {
            if !is_scalar(&item) {
                out.set_item(i, deep_copy(&item)?)?;
            }
        }
        return Ok(out.into_any());
    }
    if let Ok(t) = v.cast_exact::<PyTuple>() {
        if t.iter().all(|x| is_scalar(&x)) {
            return Ok(v.clone());
        }
        let items = t
            .iter()
            .map(|x| deep_copy(&x))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(PyTuple::new(py, items)?.into_any());
    }
    if let Ok(s) = v.cast_exact::<PySet>() {
        return Ok(PySet::new(py, s.iter())?.into_any());
    }
    // Frozensets of immutables and anything shared.
    Ok(v.clone())
}

static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Fill the caches above while the module is imported. Filled lazily by a
/// worker thread instead, a cache's initialisation (which lets go of the
/// GIL) could be under way when another thread forks: the child would wait
/// for it for ever.
pub fn warm(py: Python<'_>) -> PyResult<()> {
    DUMPS.import(py, "pickle", "dumps")?;
    LOADS.import(py, "pickle", "loads")?;
    Ok(())
}

/// `pickle.dumps(value)` with the default protocol, as the reference stores.
pub fn dumps(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    Ok(dumps_object(value)?.as_bytes().to_vec())
}

/// `pickle.dumps(value)`, as the bytes object it returns.
fn dumps_object<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let f = DUMPS.import(value.py(), "pickle", "dumps")?;
    Ok(f.call1((value,))?.cast_into::<PyBytes>()?)
}

/// `pickle.loads(data)`.
pub fn loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    loads_object(&PyBytes::new(py, data))
}

/// `pickle.loads(data)` of a bytes object as it is.
fn loads_object<'py>(data: &Bound<'py, PyBytes>) -> PyResult<Bound<'py, PyAny>> {
    let f = LOADS.import(data.py(), "pickle", "loads")?;
    f.call1((data,))
}

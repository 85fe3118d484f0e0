//! The vectorcall face of `CachedFunction` (PEP 590).
//!
//! PyO3 gives a class's `__call__` only the `tp_call` slot, for which CPython
//! packs the positional arguments into a new tuple (and keywords into a dict)
//! on every call. A hit needs neither: the arguments only go into the key.
//! So each object carries an entry point (`CachedFunction::vectorcall`), and
//! `enable_vectorcall` points the type's `tp_vectorcall_offset` at it; CPython
//! then calls `entry` with the arguments as they lie on its stack, and a miss
//! hands that same vector on to the function. `tp_call` stays, with the same
//! behaviour, for callers that use it.
//!
//! `entry` goes through PyO3's fast-call trampoline (`pyo3::impl_`, PyO3's
//! internal API, pinned by Cargo.lock: a PyO3 upgrade that changes it fails
//! to compile rather than misbehave).

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::impl_::trampoline::{fastcall_cfunction_with_keywords as fastcall, MethodDef};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};

use super::CachedFunction;

struct Call;

impl MethodDef<fastcall::Func> for Call {
    const METH: fastcall::Func = call;
}

/// CPython's call of a `CachedFunction`, through PyO3's own trampoline for
/// fast calls (its attach bookkeeping, and panics turned into exceptions).
/// The vectorcall signature differs from the fast-call one only in a flag
/// bit of `nargsf`, which `call` masks off.
pub(super) unsafe extern "C" fn entry(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls vectorcall functions with the interpreter attached.
    unsafe { fastcall::<Call>(callable, args, nargsf as ffi::Py_ssize_t, kwnames) }
}

/// # Safety
/// The vectorcall contract: `callable` is a `CachedFunction`, `args` holds
/// the positional arguments then the values of the `kwnames` tuple (if any).
unsafe fn call<'py>(
    py: Python<'py>,
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: per the contract above; `Bound` has the layout of a pointer.
    let slf = unsafe { Bound::ref_from_ptr(py, &callable).cast_unchecked::<CachedFunction>() };
    let nargs = (nargsf as usize) & !ffi::PY_VECTORCALL_ARGUMENTS_OFFSET;
    let names = if kwnames.is_null() {
        None
    } else {
        Some(unsafe { Bound::ref_from_ptr(py, &kwnames).cast_unchecked::<PyTuple>() })
    };
    let nkw = names.map_or(0, |n| n.len());
    let everything: &[Bound<'_, PyAny>] = if nargs + nkw == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(args.cast(), nargs + nkw) }
    };
    let positional = &everything[..nargs];
    let kwargs = match names {
        Some(names) if nkw > 0 => {
            let d = PyDict::new(py);
            for (name, value) in names.iter().zip(&everything[nargs..]) {
                d.set_item(name, value)?;
            }
            Some(d)
        }
        _ => None,
    };
    let func = slf.get().func.bind(py);
    let given = kwargs.as_ref().map(Bound::as_ptr);
    let invoke = |kw: Option<&Bound<'py, PyDict>>| -> PyResult<Bound<'py, PyAny>> {
        if kw.map(Bound::as_ptr) == given {
            // The keyword arguments as they came: hand the function CPython's
            // own argument vector, no tuple and no dict. (Without the
            // ARGUMENTS_OFFSET flag: the slot before `args` is not ours to lend.)
            // SAFETY: `args` and `kwnames` are this call's, still alive.
            unsafe {
                Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyObject_Vectorcall(func.as_ptr(), args, nargs, kwnames),
                )
            }
        } else {
            // Per-call flags were taken out of them.
            func.call(tuple_of(py, positional)?, kw)
        }
    };
    let result = CachedFunction::call(slf, positional, kwargs.as_ref(), &invoke)?;
    Ok(result.into_ptr())
}

/// The positional arguments as a tuple (for calling the function).
fn tuple_of<'py>(py: Python<'py>, items: &[Bound<'py, PyAny>]) -> PyResult<Bound<'py, PyTuple>> {
    // SAFETY: a new tuple of `items.len()` slots, each filled once with a new
    // reference; the tuple owns them from here.
    unsafe {
        let t = ffi::PyTuple_New(items.len() as ffi::Py_ssize_t);
        let t = Bound::from_owned_ptr_or_err(py, t)?;
        for (i, item) in items.iter().enumerate() {
            ffi::PyTuple_SET_ITEM(t.as_ptr(), i as ffi::Py_ssize_t, item.clone().into_ptr());
        }
        Ok(t.cast_into_unchecked())
    }
}

/// Point `CachedFunction`'s type at the per-object entry point. Called once,
/// at module initialisation, before any instance is called.
pub fn enable_vectorcall(ty: &Bound<'_, PyType>) -> PyResult<()> {
    let py = ty.py();
    // The entry point's offset inside the object, read off a real instance:
    // PyO3 decides where the Rust struct lies in the Python object.
    let probe = Bound::new(py, CachedFunction::for_layout(py)?)?;
    let base = probe.as_ptr() as usize;
    let field = &probe.get().vectorcall as *const ffi::vectorcallfunc as usize;
    let offset = field
        .checked_sub(base)
        .filter(|o| o % std::mem::align_of::<usize>() == 0)
        .ok_or_else(|| PyRuntimeError::new_err("cachu: unexpected object layout"))?;
    let tp = ty.as_type_ptr();
    // SAFETY: the type is ours, ready, and not yet called; CPython reads these
    // two fields on each call (`PyVectorcall_Function`).
    unsafe {
        (*tp).tp_vectorcall_offset = offset as ffi::Py_ssize_t;
        (*tp).tp_flags |= ffi::Py_TPFLAGS_HAVE_VECTORCALL;
    }
    Ok(())
}

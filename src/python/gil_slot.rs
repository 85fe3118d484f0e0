//! A slot for one Python object that is read and written only while the
//! GIL is held, so it needs no lock of its own: reading it is a plain load
//! and an increment of the object's reference count, where a lock and an
//! `Arc` cost four locked instructions (a seventh of a memory hit).
//!
//! Sound because every access takes the `Python` token and neither access
//! runs Python code while it touches the slot (so no other thread can get
//! the GIL in between), and because the extension module does not declare
//! itself free-threading safe: a free-threaded CPython turns the GIL back
//! on when it imports it.

use std::cell::UnsafeCell;

use pyo3::prelude::*;

pub struct GilSlot<T>(UnsafeCell<Option<Py<T>>>);

// SAFETY: see the module's comment: the GIL serializes every access.
unsafe impl<T> Sync for GilSlot<T> {}

impl<T> GilSlot<T> {
    pub const fn empty() -> Self {
        Self(UnsafeCell::new(None))
    }

    /// A new reference to the object in the slot, if any.
    #[inline]
    pub fn load(&self, py: Python<'_>) -> Option<Py<T>> {
        // SAFETY: the GIL is held (`py`) and `clone_ref` runs no Python code.
        unsafe { (*self.0.get()).as_ref().map(|o| o.clone_ref(py)) }
    }

    /// Put `value` in the slot; the object it replaces is released after
    /// the slot is written (its release may run Python code).
    pub fn store(&self, _py: Python<'_>, value: Py<T>) {
        // SAFETY: the GIL is held (`_py`); `replace` runs no Python code.
        let old = unsafe { (*self.0.get()).replace(value) };
        drop(old);
    }
}

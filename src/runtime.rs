//! The engine's async runtime: one small tokio runtime per process, made on
//! first use (importing or configuring starts no thread). A process forked
//! from one that had a runtime gets a new one: the parent's worker threads
//! do not exist in the child, so its runtime is forgotten, never used.

use std::sync::OnceLock;

use parking_lot::Mutex;
use tokio::runtime::{Builder, Handle, Runtime};

/// A handle to this process's runtime.
pub fn handle() -> Handle {
    static CURRENT: OnceLock<Mutex<Option<(u32, Handle)>>> = OnceLock::new();
    let pid = crate::fork::pid();
    let mut current = CURRENT.get_or_init(|| Mutex::new(None)).lock();
    if let Some((owner, handle)) = &*current {
        if *owner == pid {
            return handle.clone();
        }
    }
    let runtime: &'static Runtime = Box::leak(Box::new(
        Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cachu-io")
            .enable_all()
            .build()
            .expect("starting the cachu I/O runtime"),
    ));
    let handle = runtime.handle().clone();
    *current = Some((pid, handle.clone()));
    handle
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_tasks() {
        let h = super::handle();
        let (tx, rx) = std::sync::mpsc::channel();
        h.spawn(async move { tx.send(42).unwrap() });
        assert_eq!(rx.recv().unwrap(), 42);
    }
}

//! The engine's async runtime: one small tokio runtime per process, made on
//! first use (importing or configuring starts no thread). A process forked
//! from one that had a runtime gets a new one: the parent's worker threads
//! do not exist in the child, so its runtime is forgotten, never used.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::fork::PerProcess;

/// A handle to this process's runtime.
pub fn handle() -> Handle {
    static CURRENT: PerProcess<OnceLock<Handle>> = PerProcess::new(OnceLock::new);
    CURRENT.get().get_or_init(start).clone()
}

fn start() -> Handle {
    // Never shut down: its tasks may outlive any caller.
    let runtime: &'static Runtime = Box::leak(Box::new(
        Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cachu-io")
            .enable_all()
            .build()
            .expect("starting the cachu I/O runtime"),
    ));
    runtime.handle().clone()
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

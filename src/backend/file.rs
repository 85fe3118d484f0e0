//! The SQLite file backend: one database file per cache path, shared with
//! other threads and processes (including the pure-Python implementation of
//! cachu) through a fixed schema:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB NOT NULL,
//!     created_at REAL NOT NULL, expires_at REAL NOT NULL);
//! CREATE INDEX IF NOT EXISTS idx_cache_expires ON cache(expires_at);
//! ```
//!
//! `value` holds the opaque bytes handed to `set`, `created_at` and
//! `expires_at` are Unix seconds. An entry is live while `now <= expires_at`.
//!
//! How it behaves:
//!
//! * **Connections** are pooled: an operation checks one out of a small
//!   `Mutex<Vec<Connection>>` (opening a new one when the pool is empty) and
//!   puts it back afterwards. The pool lock is only held to pop or push; all
//!   SQLite work happens outside it. Every connection runs in WAL mode with
//!   `synchronous=NORMAL`, checkpoints when the WAL reaches 4 MiB (a quarter
//!   of the free space on a nearly full disk) and cuts it back to that size
//!   after a burst, a 5 s busy timeout, and uses cached statements.
//! * **Disk full**: an operation failing with `SQLITE_FULL` truncates the
//!   WAL (`wal_checkpoint(TRUNCATE)`) to give the space back and is tried
//!   once more; if the disk is still full it fails (an outage).
//! * **Writeback**: every megabyte or so written, the WAL's dirty pages are
//!   handed to the kernel for writeback (Linux), so that the fsync opening
//!   the next checkpoint has little left to wait for.
//! * **Locking** between threads and processes is SQLite's own; `SQLITE_BUSY`
//!   or `SQLITE_LOCKED` errors that still surface are retried a few times.
//! * **Fork safety**: the pool remembers the pid that filled it. A process
//!   that finds a different pid leaks (never closes) the inherited
//!   connections and opens its own. The pid is cached and refreshed in every
//!   child of `fork()` (no system call per operation).
//! * **Replaced files**: about once a second the file's identity (device and
//!   inode) is compared with the one the pool opened; if the file was removed
//!   or replaced the pooled connections are dropped and fresh ones opened.
//! * **Sweeping**: every [`SWEEP_EVERY_WRITES`] writes, or on the first write
//!   more than [`SWEEP_INTERVAL_SECS`] after the last sweep, expired rows are
//!   deleted in bulk.
//! * **Corruption**: an operation failing with `SQLITE_NOTADB` or
//!   `SQLITE_CORRUPT` on a freshly opened connection makes the backend log a
//!   warning, rename the file to `<path>.corrupt-<unix-ts>` (its `-wal` goes
//!   along, its `-shm` is removed), create a fresh database and retry the
//!   operation once.
//! * **Safety** ([`super::file_safety`]): the database is created `0600`
//!   (so are its `-wal` and `-shm`), and a database or sidecar file that is
//!   a symbolic link or belongs to another user is never opened: every
//!   operation then behaves as on an empty cache that stores nothing.
//! * **Signing** ([`crate::sign`], with [`FileBackend::with_signer`]): the
//!   `value` column holds the payload followed by its signature's trailer,
//!   and a value whose trailer is missing or wrong reads as missing.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::file_safety::Guard;
use super::{Backend, Hit};
use crate::clock;
use crate::error::{Error, Result};
use crate::sign::{Signer, Signing};

/// The table every implementation shares (the text must not change).
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL)";
/// The expiry index every implementation shares.
const CREATE_INDEX: &str = "CREATE INDEX IF NOT EXISTS idx_cache_expires ON cache(expires_at)";

const SQL_GET: &str = "SELECT value, created_at, expires_at FROM cache WHERE key = ?1";
const SQL_SET: &str =
    "INSERT OR REPLACE INTO cache (key, value, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)";
const SQL_DELETE_KEY: &str = "DELETE FROM cache WHERE key = ?1 RETURNING expires_at";
const SQL_DELETE_EXPIRED_KEY: &str = "DELETE FROM cache WHERE key = ?1 AND expires_at < ?2";
const SQL_SWEEP: &str = "DELETE FROM cache WHERE expires_at < ?1";
const SQL_COUNT_ALL: &str = "SELECT COUNT(*) FROM cache WHERE expires_at >= ?1";
const SQL_COUNT_GLOB: &str = "SELECT COUNT(*) FROM cache WHERE key GLOB ?1 AND expires_at >= ?2";
const SQL_KEYS_ALL: &str = "SELECT key FROM cache WHERE expires_at >= ?1";
const SQL_KEYS_GLOB: &str = "SELECT key FROM cache WHERE key GLOB ?1 AND expires_at >= ?2";
const SQL_CLEAR_ALL: &str = "DELETE FROM cache";
const SQL_CLEAR_GLOB: &str = "DELETE FROM cache WHERE key GLOB ?1";

/// How long SQLite itself waits on a locked database before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// How many more times an operation is tried when `SQLITE_BUSY` still surfaces.
const BUSY_RETRIES: u32 = 5;
/// Connections kept idle in the pool at most; extra ones are closed.
const MAX_IDLE: usize = 16;
/// Capacity of each connection's prepared-statement cache.
const STATEMENT_CACHE: usize = 32;
/// The WAL size (bytes of pages) at which the writer whose commit passes it
/// checkpoints (`wal_autocheckpoint`, which counts pages), and to which a
/// WAL grown past it by a burst is cut back (`journal_size_limit`). Every
/// checkpoint costs a few fsyncs however few pages it copies, so fewer,
/// larger ones are cheaper; but the WAL is disk the cache holds beyond its
/// data: SQLite's default, 1000 pages (4 MiB with 4 KiB pages).
const WAL_CHECKPOINT_BYTES: i64 = 4 << 20;
/// On a nearly full disk the WAL gets at most this share of the free space
/// (a checkpoint also needs room in the database).
const WAL_FREE_SPACE_SHARE: u64 = 4;
/// Sweep expired rows every this many writes ...
pub const SWEEP_EVERY_WRITES: u64 = 1000;
/// ... or on the first write this many seconds after the previous sweep.
pub const SWEEP_INTERVAL_SECS: f64 = 60.0;
/// How often (seconds) to check that the file on disk is still the one the
/// pooled connections have open.
const RECHECK_INTERVAL_SECS: f64 = 1.0;
/// After about this many bytes written to the WAL, start the kernel writing
/// them to disk in the background (see [`start_writeback`]).
const WAL_KICK_BYTES: u64 = 1024 * 1024;
/// What one write adds to the WAL besides its key and value: a commit
/// rewrites whole pages (the row's table, key-index and expiry-index leaves).
const WAL_BYTES_PER_WRITE: u64 = 3 * 4096;

/// No thread is inside SQLite when the process forks: SQLite's mutexes
/// (the VFS's per-file shm mutex above all) would be copied into the child
/// held by a thread that does not exist there, and its next use would hang.
/// Every operation counts itself in; a `pthread_atfork` prepare handler
/// stops new ones and waits for the running ones to finish.
mod fork_gate {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Once;
    use std::time::Duration;

    static FORKING: AtomicBool = AtomicBool::new(false);
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);
    static HOOK: Once = Once::new();

    pub struct Inside;

    impl Drop for Inside {
        fn drop(&mut self) {
            ACTIVE.fetch_sub(1, SeqCst);
        }
    }

    pub fn enter() -> Inside {
        HOOK.call_once(|| {
            // SAFETY: the handlers only touch atomics and sleep.
            unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
        });
        loop {
            if !FORKING.load(SeqCst) {
                ACTIVE.fetch_add(1, SeqCst);
                if !FORKING.load(SeqCst) {
                    return Inside;
                }
                ACTIVE.fetch_sub(1, SeqCst);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// How long a fork waits for the operations under way. Bounded: one of
    /// them may be waiting for the GIL, which the forking thread holds (a
    /// log line); the fork then goes ahead as it would without the gate.
    const PATIENCE: Duration = Duration::from_secs(2);

    extern "C" fn prepare() {
        FORKING.store(true, SeqCst);
        let start = std::time::Instant::now();
        while ACTIVE.load(SeqCst) != 0 && start.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    extern "C" fn release() {
        FORKING.store(false, SeqCst);
    }
}

/// Starts the kernel writing `wal`'s dirty pages to disk, without waiting
/// for them.
///
/// With `synchronous=NORMAL` commits never sync, but every checkpoint first
/// fsyncs the WAL, and the writer whose commit triggers it waits until all
/// the frames written since the previous checkpoint are on disk (several
/// milliseconds). Started along the way, that writeback is mostly done by
/// then and the fsync only waits for the last few pages. This only makes
/// data reach the disk sooner: it changes nothing in what SQLite writes or
/// syncs, nor in what a crash can leave behind. SQLite takes no POSIX locks
/// on the WAL file, so opening and closing our own descriptor of it cannot
/// drop any of its locks.
#[cfg(target_os = "linux")]
fn start_writeback(wal: &Path) {
    use std::os::unix::io::AsRawFd;
    if let Ok(file) = fs::File::open(wal) {
        // SAFETY: a valid descriptor; SYNC_FILE_RANGE_WRITE (offset 0, length
        // 0: the whole file) only queues the dirty pages for writeback.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_wal: &Path) {}

/// What identifies the file at a path (device and inode where available).
#[cfg(unix)]
type FileId = (u64, u64);
#[cfg(not(unix))]
type FileId = ();

fn file_identity(path: &Path) -> Option<FileId> {
    let meta = fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some(())
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `path` with `suffix` appended to its last component (`x.db` -> `x.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn is_corrupt(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

fn is_full(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(ErrorCode::DiskFull)
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Fails with `BadDirectory` unless `dir` exists, is a directory and a file
/// can be created in it.
fn check_directory(dir: &Path) -> Result<()> {
    let bad = |reason: String| Error::BadDirectory {
        path: dir.to_path_buf(),
        reason,
    };
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(bad("the directory does not exist".into()))
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    // Permission bits do not tell the whole story (ACLs, read-only mounts,
    // root): try to create a file.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let probe = dir.join(format!(".cachu-write-probe-{}-{nanos}", std::process::id()));
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(file) => {
            drop(file);
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        // Another thread's probe of the same name: the directory is writable.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(bad(format!("not writable: {e}"))),
    }
}

/// How large the WAL of a new connection to `path` may grow: at most
/// [`WAL_CHECKPOINT_BYTES`], less on a disk with little free space.
fn wal_budget(path: &Path) -> i64 {
    let share = free_bytes(&parent_dir(path)).map_or(u64::MAX, |f| f / WAL_FREE_SPACE_SHARE);
    share.min(WAL_CHECKPOINT_BYTES as u64) as i64
}

/// Bytes an unprivileged user may still write on the filesystem of `dir`.
#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid C string and a zeroed out-struct statvfs fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_dir.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// Reads a column the reference writes as BLOB (tolerating TEXT).
fn bytes_column(value: ValueRef<'_>, column: usize) -> rusqlite::Result<Vec<u8>> {
    match value {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b.to_vec()),
        other => Err(rusqlite::Error::InvalidColumnType(
            column,
            "value".into(),
            other.data_type(),
        )),
    }
}

/// The row of `key`: `(value, created_at, expires_at)`.
fn read_row(conn: &Connection, key: &str) -> rusqlite::Result<Option<(Vec<u8>, f64, f64)>> {
    conn.prepare_cached(SQL_GET)?
        .query_row([key], |row| {
            Ok((
                bytes_column(row.get_ref(0)?, 0)?,
                row.get::<_, f64>(1)?,
                row.get::<_, f64>(2)?,
            ))
        })
        .optional()
}

/// Reads a key column (TEXT; a BLOB key is decoded lossily).
fn key_column(value: ValueRef<'_>) -> rusqlite::Result<String> {
    match value {
        ValueRef::Text(b) | ValueRef::Blob(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(rusqlite::Error::InvalidColumnType(
            0,
            "key".into(),
            other.data_type(),
        )),
    }
}

/// Pragmas and schema for a newly opened connection.
fn configure(conn: &Connection, wal_bytes: i64) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    match conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get::<_, String>(0)) {
        Ok(mode) if !mode.eq_ignore_ascii_case("wal") => {
            log::debug!("cachu: SQLite kept journal_mode={mode} instead of WAL");
        }
        Ok(_) => {}
        // Switching a database that other processes hold open in rollback
        // mode can stay locked; it still works in its current mode.
        Err(e) if is_busy(&e) => {
            log::debug!("cachu: could not switch to WAL yet ({e}); continuing");
        }
        Err(e) => return Err(e),
    }
    // In WAL mode commits do not sync, checkpoints do; a crash or power loss
    // can lose the last commits but never corrupts the database.
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    let checkpoint_pages = (wal_bytes / page_size.max(512)).max(16);
    conn.execute_batch(&format!(
        "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint={checkpoint_pages}; \
         PRAGMA journal_size_limit={wal_bytes}"
    ))?;
    conn.execute_batch(CREATE_TABLE)?;
    conn.execute_batch(CREATE_INDEX)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Deletes the expired rows; returns how many.
fn sweep_on(conn: &Connection, now: f64) -> rusqlite::Result<u64> {
    let removed = conn.prepare_cached(SQL_SWEEP)?.execute([now])?;
    Ok(removed as u64)
}

/// Closes a connection, or leaks it when closing could touch files that are
/// no longer its own (an inherited or a set-aside database: SQLite's close
/// may checkpoint and unlink `-wal`/`-shm` by name).
fn dispose(conn: Connection, forget: bool) {
    if forget {
        std::mem::forget(conn);
    } else {
        drop(conn);
    }
}

struct Pool {
    /// The process that opened the pooled connections.
    pid: u32,
    /// Bumped whenever the pooled connections are thrown away; a connection
    /// checked out under an older generation is not put back.
    generation: u64,
    /// Connections of a generation below this one must be leaked, not closed.
    forget_before: u64,
    idle: Vec<Connection>,
    /// Identity of the file the current generation opened.
    file_id: Option<FileId>,
}

/// Why one attempt at an operation failed.
struct Failure {
    err: rusqlite::Error,
    /// The connection was opened for this attempt (not taken from the pool).
    fresh: bool,
    generation: u64,
    /// Identity of the file a fresh connection opened.
    file_id: Option<FileId>,
    /// The file was not opened (see [`super::file_safety`]): run uncached.
    refused: bool,
}

struct Checkout {
    conn: Connection,
    generation: u64,
    pid: u32,
    fresh: bool,
}

/// The SQLite file backend; see the module documentation.
pub struct FileBackend {
    path: PathBuf,
    /// `<path>-wal`.
    wal_path: PathBuf,
    pool: Mutex<Pool>,
    /// Serialises moving a corrupt file aside.
    recovery: Mutex<()>,
    writes: AtomicU64,
    /// Roughly how many bytes went into the WAL since writeback was last
    /// started.
    wal_unsynced: AtomicU64,
    /// f64 bits of the Unix time of the last sweep.
    last_sweep: AtomicU64,
    /// f64 bits of the Unix time of the last file identity check.
    last_check: AtomicU64,
    sweep_every: u64,
    sweep_interval: f64,
    recheck_interval: f64,
    /// Which files may be opened.
    guard: Guard,
    signing: Signing,
}

impl fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileBackend {
    /// A backend storing into the SQLite database at `path`.
    ///
    /// The directory holding `path` must exist and be writable
    /// ([`Error::BadDirectory`] otherwise). The database itself is created
    /// and opened lazily, by the first operation.
    pub fn open(path: impl Into<PathBuf>) -> Result<FileBackend> {
        let path = path.into();
        check_directory(&parent_dir(&path))?;
        Self::open_later(path)
    }

    /// [`FileBackend::open`] without requiring the directory now: until it
    /// exists (again) every operation fails with [`Error::Unavailable`], and
    /// works once it is there.
    pub fn open_later(path: impl Into<PathBuf>) -> Result<FileBackend> {
        let path = path.into();
        if path.is_dir() {
            return Err(Error::Io {
                path,
                source: io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "the cache database path is a directory",
                ),
            });
        }
        Ok(FileBackend {
            wal_path: with_suffix(&path, "-wal"),
            path,
            pool: Mutex::new(Pool {
                pid: crate::fork::pid(),
                generation: 0,
                forget_before: 0,
                idle: Vec::new(),
                file_id: None,
            }),
            recovery: Mutex::new(()),
            writes: AtomicU64::new(0),
            wal_unsynced: AtomicU64::new(0),
            last_sweep: AtomicU64::new(0f64.to_bits()),
            last_check: AtomicU64::new(0f64.to_bits()),
            sweep_every: SWEEP_EVERY_WRITES,
            sweep_interval: SWEEP_INTERVAL_SECS,
            recheck_interval: RECHECK_INTERVAL_SECS,
            guard: Guard::default(),
            signing: Signing::default(),
        })
    }

    /// This backend, signing the values it writes and reading only values
    /// that verify (with `Some`); see [`crate::sign`].
    pub fn with_signer(mut self, signer: Option<Arc<Signer>>) -> Self {
        self.signing = Signing::new(signer);
        self
    }

    /// [`Backend::get`] if it can be done without waiting, else `None`:
    /// no idle connection of this process is pooled yet, the file is due
    /// for its identity check, or the database is busy. An event loop reads
    /// inline with it and hands only such reads to a thread. An expired
    /// entry reads as missing here and is left for the sweep (removing it
    /// is a write, which may wait). Errors are left to the ordinary path,
    /// which retries and recovers: they give `None` too.
    pub fn get_nowait(&self, key: &str) -> Option<Result<Option<Hit<Vec<u8>>>>> {
        let now = clock::now();
        let last_check = f64::from_bits(self.last_check.load(Ordering::Relaxed));
        if (now - last_check).abs() >= self.recheck_interval {
            return None;
        }
        let pid = crate::fork::pid();
        let (conn, generation) = {
            let mut pool = self.pool.lock();
            if pool.pid != pid {
                return None;
            }
            (pool.idle.pop()?, pool.generation)
        };
        let row = conn
            .busy_timeout(Duration::ZERO)
            .and_then(|()| read_row(&conn, key));
        let restored = conn.busy_timeout(BUSY_TIMEOUT);
        if restored.is_err() {
            dispose(conn, false);
            return None;
        }
        self.checkin(conn, generation, pid);
        let row = row.ok()?;
        Some(Ok(row.and_then(|(value, created_at, expires_at)| {
            if now > expires_at {
                return None;
            }
            let value = self
                .signing
                .open(key, created_at, value, 0, &self.path.display())?;
            Some(Hit { value, created_at })
        })))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes every expired row now; returns how many were removed.
    pub fn sweep(&self) -> Result<u64> {
        self.run(|conn, now| {
            let removed = sweep_on(conn, now)?;
            self.last_sweep.store(now.to_bits(), Ordering::Relaxed);
            Ok(removed)
        })
    }

    // ----- running operations -------------------------------------------

    /// Runs `op` on a pooled connection, retrying busy errors and recovering
    /// from a corrupt file once. `op` gets the current Unix time.
    fn run<T: Default>(
        &self,
        mut op: impl FnMut(&mut Connection, f64) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut busy_retries = 0u32;
        let mut reset = false;
        let mut rebuilt = false;
        let mut shrunk = false;
        loop {
            let started = std::time::Instant::now();
            let failure = match self.attempt(&mut op) {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if failure.refused {
                // Logged by the guard; nothing is read or stored.
                return Ok(T::default());
            }
            if is_corrupt(&failure.err) {
                if !failure.fresh && !reset {
                    // The pooled connections may point at a file that was
                    // replaced underneath them: try a fresh one first.
                    reset = true;
                    self.invalidate(Some(failure.generation));
                    continue;
                }
                if !rebuilt {
                    rebuilt = true;
                    self.set_aside(failure.file_id, &failure.err)?;
                    continue;
                }
            } else if is_full(&failure.err) && !shrunk {
                shrunk = true;
                self.give_back_space();
                continue;
            } else if is_busy(&failure.err)
                && busy_retries < BUSY_RETRIES
                // A lock held past the whole busy timeout is an outage, not
                // a race worth trying again (that would multiply the wait).
                && started.elapsed() < BUSY_TIMEOUT / 2
            {
                busy_retries += 1;
                std::thread::sleep(Duration::from_millis(5u64 << busy_retries));
                continue;
            }
            return Err(self.map_err(failure.err));
        }
    }

    /// The disk is full: checkpoint the whole WAL into the database and
    /// truncate it to nothing, so the space it held is free again.
    fn give_back_space(&self) {
        let truncated = self.attempt(&mut |conn: &mut Connection, _| {
            let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            })?;
            // Checkpoint sooner from now on: the disk has little room.
            let pages = (wal_budget(&self.path) / 4096).max(16);
            conn.execute_batch(&format!("PRAGMA wal_autocheckpoint={pages}"))?;
            Ok(busy)
        });
        match truncated {
            Ok(0) => log::debug!("cachu: {:?}: disk full, WAL truncated", self.path),
            Ok(_) => log::debug!("cachu: {:?}: disk full, WAL busy", self.path),
            Err(f) => log::debug!(
                "cachu: {:?}: disk full, checkpoint failed: {}",
                self.path,
                f.err
            ),
        }
    }

    fn attempt<T>(
        &self,
        op: &mut impl FnMut(&mut Connection, f64) -> rusqlite::Result<T>,
    ) -> std::result::Result<T, Failure> {
        let _inside = fork_gate::enter();
        let now = clock::now();
        let Checkout {
            mut conn,
            generation,
            pid,
            fresh,
        } = self.checkout(now)?;
        match op(&mut conn, now) {
            Ok(value) => {
                self.checkin(conn, generation, pid);
                Ok(value)
            }
            Err(err) => {
                if is_corrupt(&err) {
                    dispose(conn, true);
                } else {
                    self.checkin(conn, generation, pid);
                }
                Err(Failure {
                    err,
                    fresh,
                    generation,
                    file_id: None,
                    refused: false,
                })
            }
        }
    }

    fn checkout(&self, now: f64) -> std::result::Result<Checkout, Failure> {
        let pid = crate::fork::pid();
        self.recheck_file(now);
        let (pooled, generation, inherited) = {
            let mut pool = self.pool.lock();
            let inherited = if pool.pid != pid {
                pool.pid = pid;
                pool.generation += 1;
                pool.forget_before = pool.generation;
                pool.file_id = None;
                std::mem::take(&mut pool.idle)
            } else {
                Vec::new()
            };
            (pool.idle.pop(), pool.generation, inherited)
        };
        if !inherited.is_empty() {
            log::debug!(
                "cachu: process {pid} inherited {} connection(s) to {:?}; reopening",
                inherited.len(),
                self.path
            );
        }
        for conn in inherited {
            dispose(conn, true);
        }
        if let Some(conn) = pooled {
            return Ok(Checkout {
                conn,
                generation,
                pid,
                fresh: false,
            });
        }
        let refused = || Failure {
            err: rusqlite::Error::InvalidPath(self.path.clone()),
            fresh: true,
            generation,
            file_id: None,
            refused: true,
        };
        if !self.guard.admit_before_open(&self.path) {
            return Err(refused());
        }
        let conn = self
            .open_connection(generation)
            .map_err(|(err, file_id)| Failure {
                err,
                fresh: true,
                generation,
                file_id,
                refused: false,
            })?;
        if !self.guard.admit_after_open(&self.path) {
            dispose(conn, true);
            return Err(refused());
        }
        Ok(Checkout {
            conn,
            generation,
            pid,
            fresh: true,
        })
    }

    fn checkin(&self, conn: Connection, generation: u64, pid: u32) {
        let forget = {
            let mut pool = self.pool.lock();
            if pool.pid == pid && pool.generation == generation && pool.idle.len() < MAX_IDLE {
                pool.idle.push(conn);
                return;
            }
            pool.pid != pid || generation < pool.forget_before
        };
        dispose(conn, forget);
    }

    /// Opens and configures a connection; on failure also returns the
    /// identity of the file it had opened.
    fn open_connection(
        &self,
        generation: u64,
    ) -> std::result::Result<Connection, (rusqlite::Error, Option<FileId>)> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // Not SQLITE_OPEN_NOFOLLOW: it refuses a symbolic link anywhere in
        // the path (macOS's /tmp is one); the guard checks the file itself.
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| (e, None))?;
        let file_id = file_identity(&self.path);
        if let Err(err) = configure(&conn, wal_budget(&self.path)) {
            // A corrupt file is about to be set aside: do not let the close
            // touch its sidecar files, which may belong to a new database
            // by then.
            dispose(conn, is_corrupt(&err));
            return Err((err, file_id));
        }
        let mut pool = self.pool.lock();
        if pool.generation == generation && pool.file_id.is_none() {
            pool.file_id = file_id;
        }
        Ok(conn)
    }

    /// About once per `recheck_interval`, drops the pooled connections if
    /// the file at `path` is no longer the one they opened.
    fn recheck_file(&self, now: f64) {
        let last_bits = self.last_check.load(Ordering::Relaxed);
        if (now - f64::from_bits(last_bits)).abs() < self.recheck_interval {
            return;
        }
        if self
            .last_check
            .compare_exchange(
                last_bits,
                now.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        let current = file_identity(&self.path);
        let known = self.pool.lock().file_id;
        if known.is_some() && known != current {
            log::warn!(
                "cachu: cache database {:?} was removed or replaced; reopening",
                self.path
            );
            self.invalidate(None);
        }
    }

    /// Throws the pooled connections away (leaking them: their file is
    /// suspect). With `Some(generation)`, only if no one did it since.
    fn invalidate(&self, generation: Option<u64>) {
        let stale = {
            let mut pool = self.pool.lock();
            if generation.is_some_and(|g| g != pool.generation) {
                return;
            }
            pool.generation += 1;
            pool.forget_before = pool.generation;
            pool.file_id = None;
            std::mem::take(&mut pool.idle)
        };
        for conn in stale {
            dispose(conn, true);
        }
    }

    /// Moves a corrupt database (and its WAL) aside so that the next
    /// connection creates a fresh one.
    fn set_aside(&self, failing: Option<FileId>, cause: &rusqlite::Error) -> Result<()> {
        let _guard = self.recovery.lock();
        let current = file_identity(&self.path);
        if current.is_none() {
            // Nothing there (any more): the next open creates a database.
            return Ok(());
        }
        if failing.is_some() && failing != current {
            // Someone already replaced the file we failed on.
            return Ok(());
        }
        self.invalidate(None);
        let aside = self.aside_path();
        log::warn!(
            "cachu: cache database {:?} is unreadable ({cause}); moving it to {:?} and starting afresh",
            self.path,
            aside
        );
        match fs::rename(&self.path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
        // A WAL left behind could be replayed into the new database.
        let wal = with_suffix(&self.path, "-wal");
        if let Err(e) = fs::rename(&wal, with_suffix(&aside, "-wal")) {
            if e.kind() != io::ErrorKind::NotFound {
                if let Err(source) = fs::remove_file(&wal) {
                    if source.kind() != io::ErrorKind::NotFound {
                        return Err(Error::Io { path: wal, source });
                    }
                }
            }
        }
        let shm = with_suffix(&self.path, "-shm");
        if let Err(source) = fs::remove_file(&shm) {
            if source.kind() != io::ErrorKind::NotFound {
                log::warn!("cachu: could not remove {shm:?}: {source}");
            }
        }
        Ok(())
    }

    /// `<path>.corrupt-<unix-ts>`, with `-N` appended if that is taken.
    fn aside_path(&self) -> PathBuf {
        let base = with_suffix(&self.path, &format!(".corrupt-{}", clock::now() as u64));
        if !base.exists() {
            return base;
        }
        (1u32..)
            .map(|n| with_suffix(&base, &format!("-{n}")))
            .find(|p| !p.exists())
            .unwrap_or(base)
    }

    fn map_err(&self, err: rusqlite::Error) -> Error {
        let dir = parent_dir(&self.path);
        if !dir.is_dir() {
            return Error::Unavailable(format!(
                "file_dir {dir:?} does not exist (any more) ({err})"
            ));
        }
        Error::Sqlite {
            path: self.path.clone(),
            source: err,
        }
    }

    /// Counts `bytes` more written to the WAL; every [`WAL_KICK_BYTES`]
    /// starts their writeback.
    fn wrote(&self, bytes: u64) {
        let added = bytes.saturating_add(WAL_BYTES_PER_WRITE);
        let pending = self.wal_unsynced.fetch_add(added, Ordering::Relaxed) + added;
        if pending >= WAL_KICK_BYTES
            && self.wal_unsynced.swap(0, Ordering::Relaxed) >= WAL_KICK_BYTES
        {
            start_writeback(&self.wal_path);
        }
    }

    /// Sweeps expired rows if enough writes or time passed since the last
    /// sweep. Failures are only logged: the write itself succeeded.
    fn maybe_sweep(&self, conn: &Connection, now: f64) {
        let writes = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let last_bits = self.last_sweep.load(Ordering::Relaxed);
        let due = writes.is_multiple_of(self.sweep_every.max(1))
            || (now - f64::from_bits(last_bits)).abs() >= self.sweep_interval;
        if !due {
            return;
        }
        if self
            .last_sweep
            .compare_exchange(
                last_bits,
                now.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return; // another thread is sweeping
        }
        match sweep_on(conn, now) {
            Ok(0) => {}
            Ok(n) => log::debug!("cachu: swept {n} expired row(s) from {:?}", self.path),
            Err(e) => log::debug!("cachu: sweeping {:?} failed: {e}", self.path),
        }
    }
}

impl Backend for FileBackend {
    fn get(&self, key: &str) -> Result<Option<Hit<Vec<u8>>>> {
        let hit = self.run(|conn, now| {
            let row = read_row(conn, key)?;
            match row {
                None => Ok(None),
                Some((value, created_at, expires_at)) => {
                    if now > expires_at {
                        conn.prepare_cached(SQL_DELETE_EXPIRED_KEY)?
                            .execute(params![key, now])?;
                        Ok(None)
                    } else {
                        Ok(Some(Hit { value, created_at }))
                    }
                }
            }
        })?;
        Ok(hit.and_then(|Hit { value, created_at }| {
            let value = self
                .signing
                .open(key, created_at, value, 0, &self.path.display())?;
            Some(Hit { value, created_at })
        }))
    }

    fn set(&self, key: &str, value: &[u8], ttl: f64) -> Result<()> {
        if ttl.is_nan() || ttl <= 0.0 {
            return self.delete(key).map(|_| ());
        }
        self.run(|conn, now| {
            let signed;
            let stored = if self.signing.enabled() {
                let mut v = value.to_vec();
                self.signing.seal(key, now, &mut v, 0);
                signed = v;
                &signed[..]
            } else {
                value
            };
            conn.prepare_cached(SQL_SET)?
                .execute(params![key, stored, now, now + ttl])?;
            self.maybe_sweep(conn, now);
            Ok(())
        })?;
        self.wrote((key.len() + value.len()) as u64);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let live = self.run(|conn, now| {
            let expires_at: Option<f64> = conn
                .prepare_cached(SQL_DELETE_KEY)?
                .query_row([key], |row| row.get(0))
                .optional()?;
            Ok(expires_at.is_some_and(|e| now <= e))
        })?;
        self.wrote(key.len() as u64);
        Ok(live)
    }

    fn clear(&self, pattern: Option<&str>) -> Result<u64> {
        self.run(|conn, now| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let live: i64 = match pattern {
                Some(p) => {
                    let live = tx
                        .prepare_cached(SQL_COUNT_GLOB)?
                        .query_row(params![p, now], |row| row.get(0))?;
                    tx.prepare_cached(SQL_CLEAR_GLOB)?.execute([p])?;
                    live
                }
                None => {
                    let live = tx
                        .prepare_cached(SQL_COUNT_ALL)?
                        .query_row([now], |row| row.get(0))?;
                    tx.prepare_cached(SQL_CLEAR_ALL)?.execute([])?;
                    live
                }
            };
            tx.commit()?;
            Ok(live.max(0) as u64)
        })
    }

    fn keys(&self, pattern: Option<&str>) -> Result<Vec<String>> {
        self.run(|conn, now| match pattern {
            Some(p) => {
                let mut stmt = conn.prepare_cached(SQL_KEYS_GLOB)?;
                let keys = stmt.query_map(params![p, now], |row| key_column(row.get_ref(0)?))?;
                keys.collect()
            }
            None => {
                let mut stmt = conn.prepare_cached(SQL_KEYS_ALL)?;
                let keys = stmt.query_map([now], |row| key_column(row.get_ref(0)?))?;
                keys.collect()
            }
        })
    }

    fn count(&self, pattern: Option<&str>) -> Result<u64> {
        self.run(|conn, now| {
            let n: i64 = match pattern {
                Some(p) => conn
                    .prepare_cached(SQL_COUNT_GLOB)?
                    .query_row(params![p, now], |row| row.get(0))?,
                None => conn
                    .prepare_cached(SQL_COUNT_ALL)?
                    .query_row([now], |row| row.get(0))?,
            };
            Ok(n.max(0) as u64)
        })
    }

    fn close(&self) {
        let current = file_identity(&self.path);
        let (idle, forget) = {
            let mut pool = self.pool.lock();
            pool.generation += 1;
            // Leak rather than close connections of another process, or to
            // a file that is no longer at `path`.
            let forget = pool.pid != crate::fork::pid() || pool.file_id != current;
            pool.file_id = None;
            (std::mem::take(&mut pool.idle), forget)
        };
        for conn in idle {
            dispose(conn, forget);
        }
    }
}

impl Drop for FileBackend {
    fn drop(&mut self) {
        let current = file_identity(&self.path);
        let pool = self.pool.get_mut();
        let forget = pool.pid != crate::fork::pid() || pool.file_id != current;
        for conn in std::mem::take(&mut pool.idle) {
            dispose(conn, forget);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_nowait_reads_only_on_a_pooled_connection() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::open(dir.path().join("nowait.db")).unwrap();
        assert!(b.get_nowait("k").is_none(), "no connection pooled yet");
        b.set("k", b"v", 60.0).unwrap();
        let hit = b.get_nowait("k").expect("a pooled connection").unwrap();
        assert_eq!(hit.unwrap().value, b"v");
        assert!(b.get_nowait("absent").unwrap().unwrap().is_none());
        b.set("short", b"v", 0.001).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(b.get_nowait("short").unwrap().unwrap().is_none(), "expired");
    }
    use std::sync::Arc;
    use std::thread;

    fn backend() -> (tempfile::TempDir, FileBackend) {
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::open(dir.path().join("cache.db")).unwrap();
        (dir, backend)
    }

    fn raw(path: &Path) -> Connection {
        Connection::open(path).unwrap()
    }

    fn sorted(mut keys: Vec<String>) -> Vec<String> {
        keys.sort();
        keys
    }

    fn aside_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".corrupt-") && !n.ends_with("-wal") && !n.ends_with("-shm"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<FileBackend>();
        check::<Arc<dyn Backend>>();
    }

    #[test]
    fn connections_carry_the_settings() {
        let (_dir, b) = backend();
        let (journal, sync, autockpt, limit): (String, i64, i64, i64) = b
            .run(|conn, _| {
                Ok((
                    conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                    conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?,
                    conn.query_row("PRAGMA journal_size_limit", [], |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(sync, 1); // NORMAL
        assert_eq!(autockpt, 1024); // 4 MiB of 4 KiB pages (on a roomy disk)
        assert_eq!(limit, 4 << 20);
        // Never more than a quarter of the free space.
        assert!(wal_budget(Path::new("/dev/shm/x.db")) <= WAL_CHECKPOINT_BYTES);
        assert!(free_bytes(b.path().parent().unwrap()).unwrap() > 0);
        assert!(wal_budget(b.path()) > 0);
    }

    #[test]
    fn writes_past_the_writeback_threshold() {
        let (_dir, b) = backend();
        let big = vec![3u8; 20_000];
        // Several times WAL_KICK_BYTES, and past a checkpoint.
        for i in 0..1500 {
            b.set(&format!("k{i}"), &big, 60.0).unwrap();
        }
        assert_eq!(b.count(None).unwrap(), 1500);
        assert_eq!(b.get("k777").unwrap().unwrap().value, big);
        let ok: String = raw(b.path())
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        // No WAL at all: nothing to do, no error.
        start_writeback(&b.path().with_extension("nowhere-wal"));
    }

    #[test]
    fn round_trip() {
        let (_dir, b) = backend();
        let before = clock::now();
        b.set("5m:v1:get_user|user_id=1", b"\x80\x04\x95pickle", 60.0)
            .unwrap();
        let after = clock::now();
        let hit = b.get("5m:v1:get_user|user_id=1").unwrap().unwrap();
        assert_eq!(hit.value, b"\x80\x04\x95pickle");
        assert!(hit.created_at >= before && hit.created_at <= after);
        assert_eq!(b.get("missing").unwrap(), None);

        // Replace, empty value.
        b.set("5m:v1:get_user|user_id=1", b"", 60.0).unwrap();
        assert_eq!(
            b.get("5m:v1:get_user|user_id=1").unwrap().unwrap().value,
            b""
        );

        // Stored as the contract says.
        let (value, created, expires): (Vec<u8>, f64, f64) = raw(b.path())
            .query_row(
                "SELECT value, created_at, expires_at FROM cache WHERE key = ?1",
                ["5m:v1:get_user|user_id=1"],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(value, b"");
        assert!((expires - created - 60.0).abs() < 1e-6);
    }

    #[test]
    fn open_is_lazy_and_path_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lazy.db");
        let b = FileBackend::open(&path).unwrap();
        assert_eq!(b.path(), path.as_path());
        assert!(!path.exists());
        assert_eq!(b.count(None).unwrap(), 0);
        assert!(path.exists());
        // No probe files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("probe"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn entries_expire() {
        let (_dir, b) = backend();
        b.set("short", b"x", 0.25).unwrap();
        b.set("long", b"y", 60.0).unwrap();
        assert!(b.get("short").unwrap().is_some());
        assert_eq!(b.count(None).unwrap(), 2);
        thread::sleep(Duration::from_millis(400));
        assert_eq!(b.get("short").unwrap(), None);
        assert_eq!(b.count(None).unwrap(), 1);
        assert_eq!(b.keys(None).unwrap(), vec!["long".to_string()]);
        // get removed the expired row.
        let rows: i64 = raw(b.path())
            .query_row("SELECT COUNT(*) FROM cache WHERE key='short'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[test]
    fn non_positive_ttl_stores_nothing() {
        let (_dir, b) = backend();
        b.set("k", b"v", 0.0).unwrap();
        assert_eq!(b.get("k").unwrap(), None);
        b.set("k", b"v", 60.0).unwrap();
        b.set("k", b"w", -1.0).unwrap();
        assert_eq!(b.get("k").unwrap(), None);
        b.set("k", b"v", 60.0).unwrap();
        b.set("k", b"w", f64::NAN).unwrap();
        assert_eq!(b.get("k").unwrap(), None);
        assert_eq!(b.count(None).unwrap(), 0);
    }

    #[test]
    fn delete_reports_live_entries() {
        let (_dir, b) = backend();
        b.set("a", b"1", 60.0).unwrap();
        b.set("gone", b"2", 0.02).unwrap();
        assert!(b.delete("a").unwrap());
        assert!(!b.delete("a").unwrap());
        assert!(!b.delete("never").unwrap());
        thread::sleep(Duration::from_millis(60));
        assert!(!b.delete("gone").unwrap());
        let rows: i64 = raw(b.path())
            .query_row("SELECT COUNT(*) FROM cache", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[test]
    fn clear_counts_live_entries_only() {
        let (_dir, b) = backend();
        for i in 0..5 {
            b.set(&format!("5m:v1:f|users|{i}"), b"u", 60.0).unwrap();
            b.set(&format!("5m:v1:f|orders|{i}"), b"o", 60.0).unwrap();
        }
        b.set("5m:v1:f|users|dead", b"d", 0.02).unwrap();
        thread::sleep(Duration::from_millis(60));
        assert_eq!(b.clear(Some("*|users|*")).unwrap(), 5);
        assert_eq!(b.count(Some("*|users|*")).unwrap(), 0);
        // The expired matching row went too.
        let rows: i64 = raw(b.path())
            .query_row(
                "SELECT COUNT(*) FROM cache WHERE key GLOB '*|users|*'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0);
        assert_eq!(b.clear(Some("nothing*")).unwrap(), 0);
        b.set("x", b"1", 0.02).unwrap();
        thread::sleep(Duration::from_millis(60));
        assert_eq!(b.clear(None).unwrap(), 5);
        assert_eq!(b.count(None).unwrap(), 0);
        let rows: i64 = raw(b.path())
            .query_row("SELECT COUNT(*) FROM cache", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[test]
    fn keys_and_count_with_globs() {
        let (_dir, b) = backend();
        b.set("5m:v1:get_user|users|1", b"a", 60.0).unwrap();
        b.set("5m:v1:get_user|users|2", b"a", 60.0).unwrap();
        b.set("5m:v1:list|orders|1", b"a", 60.0).unwrap();
        b.set("1h:v1:get_user|users|3", b"a", 60.0).unwrap();
        b.set("5m:v1:stale|users|9", b"a", 0.02).unwrap();
        thread::sleep(Duration::from_millis(60));

        assert_eq!(b.count(None).unwrap(), 4);
        assert_eq!(b.count(Some("*|users|*")).unwrap(), 3);
        assert_eq!(b.count(Some("5m:*")).unwrap(), 3);
        assert_eq!(b.count(Some("?h:*")).unwrap(), 1);
        assert_eq!(b.count(Some("5m:v1:get_user|users|[12]")).unwrap(), 2);
        assert_eq!(b.count(Some("5m:v1:get_user|users|[^1]")).unwrap(), 1);
        assert_eq!(b.count(Some("nope")).unwrap(), 0);
        assert_eq!(
            sorted(b.keys(Some("5m:*")).unwrap()),
            vec![
                "5m:v1:get_user|users|1",
                "5m:v1:get_user|users|2",
                "5m:v1:list|orders|1"
            ]
        );
        assert_eq!(
            sorted(b.keys(Some("*|users|*")).unwrap()),
            vec![
                "1h:v1:get_user|users|3",
                "5m:v1:get_user|users|1",
                "5m:v1:get_user|users|2"
            ]
        );
        assert_eq!(b.keys(None).unwrap().len(), 4);
        // GLOB is case sensitive, like fnmatchcase.
        assert_eq!(b.count(Some("5M:*")).unwrap(), 0);
    }

    #[test]
    fn schema_and_hand_written_rows() {
        let (_dir, b) = backend();
        b.set("warm", b"up", 60.0).unwrap();
        let conn = raw(b.path());
        let table: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type='table' AND name='cache'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            table,
            "CREATE TABLE cache (key TEXT PRIMARY KEY, value BLOB NOT NULL, \
             created_at REAL NOT NULL, expires_at REAL NOT NULL)"
        );
        let index: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type='index' AND name='idx_cache_expires'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, "CREATE INDEX idx_cache_expires ON cache(expires_at)");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");

        // Rows laid out as the Python implementation writes them.
        let now = clock::now();
        let pickle: &[u8] =
            b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.";
        conn.execute(
            "INSERT OR REPLACE INTO cache (key, value, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params!["5m:v1:py|x=1", pickle, now - 10.0, now + 290.0],
        )
        .unwrap();
        conn.execute(
            "INSERT OR REPLACE INTO cache (key, value, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params!["5m:v1:py|x=2", pickle, now - 400.0, now - 100.0],
        )
        .unwrap();
        // Integer timestamps are read as well.
        conn.execute(
            "INSERT OR REPLACE INTO cache (key, value, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params!["5m:v1:py|x=3", pickle, 1_000_i64, (now as i64) + 1000],
        )
        .unwrap();
        let hit = b.get("5m:v1:py|x=1").unwrap().unwrap();
        assert_eq!(hit.value, pickle);
        assert_eq!(hit.created_at, now - 10.0);
        assert_eq!(b.get("5m:v1:py|x=2").unwrap(), None);
        let hit = b.get("5m:v1:py|x=3").unwrap().unwrap();
        assert_eq!(hit.created_at, 1000.0);
        assert_eq!(b.count(Some("5m:v1:py|*")).unwrap(), 2);
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("persist.db");
        {
            let b = FileBackend::open(&path).unwrap();
            b.set("k", b"v", 60.0).unwrap();
        }
        let b = FileBackend::open(&path).unwrap();
        assert_eq!(b.get("k").unwrap().unwrap().value, b"v");
        // close() then keep using it.
        b.close();
        b.set("k2", b"v2", 60.0).unwrap();
        b.close();
        assert_eq!(b.count(None).unwrap(), 2);
    }

    #[test]
    fn sweep_removes_expired_rows() {
        let (_dir, b) = backend();
        for i in 0..10 {
            b.set(&format!("dead{i}"), b"x", 0.02).unwrap();
        }
        b.set("alive", b"x", 60.0).unwrap();
        thread::sleep(Duration::from_millis(60));
        assert_eq!(b.sweep().unwrap(), 10);
        let rows: i64 = raw(b.path())
            .query_row("SELECT COUNT(*) FROM cache", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn writes_trigger_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = FileBackend::open(dir.path().join("auto.db")).unwrap();
        b.sweep_every = 5;
        b.sweep_interval = 3600.0;
        let rows = |b: &FileBackend| -> i64 {
            raw(b.path())
                .query_row("SELECT COUNT(*) FROM cache", [], |r| r.get(0))
                .unwrap()
        };
        // The first write sweeps (the last sweep was "never").
        for i in 0..4 {
            b.set(&format!("dead{i}"), b"x", 0.02).unwrap();
        }
        thread::sleep(Duration::from_millis(60));
        assert_eq!(rows(&b), 4);
        b.set("w5", b"x", 60.0).unwrap(); // 5th write: sweep
        assert_eq!(rows(&b), 1);

        // Time-based: an old last sweep makes the next write sweep.
        b.sweep_every = 1_000_000;
        b.set("dead", b"x", 0.02).unwrap();
        thread::sleep(Duration::from_millis(60));
        b.set("w7", b"x", 60.0).unwrap();
        assert_eq!(rows(&b), 3);
        b.last_sweep.store(0f64.to_bits(), Ordering::Relaxed);
        b.set("w8", b"x", 60.0).unwrap();
        assert_eq!(rows(&b), 3); // "dead" swept, "w8" added
        assert!(b.get("dead").unwrap().is_none());
    }

    #[test]
    fn garbage_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        let mut junk = Vec::new();
        let mut x: u32 = 12345;
        for _ in 0..10_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            junk.push((x >> 16) as u8);
        }
        fs::write(&path, &junk).unwrap();
        let b = FileBackend::open(&path).unwrap();
        b.set("k", b"v", 60.0).unwrap();
        assert_eq!(b.get("k").unwrap().unwrap().value, b"v");
        let aside = aside_files(dir.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].starts_with("garbage.db.corrupt-"));
        assert_eq!(fs::read(dir.path().join(&aside[0])).unwrap(), junk);
        // Reads recover as well: a garbage file under a fresh backend.
        drop(b);
        fs::write(&path, b"this is not a database, not at all; hello there").unwrap();
        let _ = fs::remove_file(with_suffix(&path, "-wal"));
        let _ = fs::remove_file(with_suffix(&path, "-shm"));
        let b = FileBackend::open(&path).unwrap();
        assert_eq!(b.get("k").unwrap(), None);
        assert_eq!(b.count(None).unwrap(), 0);
        assert_eq!(aside_files(dir.path()).len(), 2);
    }

    #[test]
    fn truncated_database_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trunc.db");
        {
            let b = FileBackend::open(&path).unwrap();
            let big = vec![7u8; 2000];
            for i in 0..500 {
                b.set(&format!("key{i}"), &big, 60.0).unwrap();
            }
        }
        // Dropping the last connection checkpointed everything into the file.
        assert!(!with_suffix(&path, "-wal").exists());
        let len = fs::metadata(&path).unwrap().len();
        assert!(len > 100_000);
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 3).unwrap();
        drop(file);

        let b = FileBackend::open(&path).unwrap();
        // Whichever operation first trips over the damage recovers.
        let count = b.count(None).unwrap();
        assert_eq!(count, 0);
        b.set("fresh", b"v", 60.0).unwrap();
        assert_eq!(b.get("fresh").unwrap().unwrap().value, b"v");
        assert_eq!(aside_files(dir.path()).len(), 1);
        let ok: String = raw(&path)
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
    }

    #[test]
    fn replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replaced.db");
        let mut b = FileBackend::open(&path).unwrap();
        b.recheck_interval = 0.0;
        b.set("k", b"v", 60.0).unwrap();
        // Someone deletes the database while our connections are pooled.
        fs::remove_file(&path).unwrap();
        let _ = fs::remove_file(with_suffix(&path, "-wal"));
        let _ = fs::remove_file(with_suffix(&path, "-shm"));
        assert_eq!(b.get("k").unwrap(), None);
        b.set("k2", b"v2", 60.0).unwrap();
        assert!(path.exists());
        let n: i64 = raw(&path)
            .query_row("SELECT COUNT(*) FROM cache", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn bad_directories_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope").join("cache.db");
        assert!(matches!(
            FileBackend::open(missing),
            Err(Error::BadDirectory { .. })
        ));
        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            FileBackend::open(file.join("cache.db")),
            Err(Error::BadDirectory { .. })
        ));
        assert!(matches!(
            FileBackend::open(dir.path()),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn vanished_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let mut b = FileBackend::open(sub.join("cache.db")).unwrap();
        b.recheck_interval = 0.0;
        b.set("k", b"v", 60.0).unwrap();
        fs::remove_dir_all(&sub).unwrap();
        let err = b.get("k").unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert!(err.is_outage());
        let err = b.set("k", b"v", 60.0).unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        // Back again: it works again.
        fs::create_dir(&sub).unwrap();
        b.set("k", b"v", 60.0).unwrap();
        assert_eq!(b.get("k").unwrap().unwrap().value, b"v");
    }

    #[test]
    fn concurrent_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("threads.db");
        let shared = Arc::new(FileBackend::open(&path).unwrap());
        // A second instance on the same file plays another process.
        let other = Arc::new(FileBackend::open(&path).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let b = if t % 2 == 0 {
                    Arc::clone(&shared)
                } else {
                    Arc::clone(&other)
                };
                thread::spawn(move || {
                    let mut x: u64 = t as u64 + 1;
                    for i in 0..300u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let key = format!("5m:v1:f|t{}|{}", x % 8, x % 50);
                        match (x >> 8) % 20 {
                            0..=7 => {
                                if let Some(hit) = b.get(&key).unwrap() {
                                    assert_eq!(hit.value.len(), 64);
                                }
                            }
                            8..=14 => b.set(&key, &[i as u8; 64], 0.5 + (x % 3) as f64).unwrap(),
                            15..=16 => {
                                b.delete(&key).unwrap();
                            }
                            17 => {
                                b.clear(Some(&format!("*|t{}|*", x % 8))).unwrap();
                            }
                            18 => {
                                b.keys(Some("5m:*")).unwrap();
                            }
                            _ => {
                                b.count(None).unwrap();
                            }
                        }
                        if i % 100 == 99 && t == 0 {
                            b.close();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let ok: String = raw(&path)
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        shared.set("final", b"x", 60.0).unwrap();
        assert_eq!(other.get("final").unwrap().unwrap().value, b"x");
    }
}

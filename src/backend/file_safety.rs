//! Which cache files the file backend may open, and how it creates them.
//!
//! A database is opened only if it, and its `-wal` and `-shm` files where
//! they exist, are regular files or absent, not symbolic links, and owned by
//! this process's (effective) user. Otherwise another user of a shared
//! directory such as `/tmp` could have planted values (which readers
//! unpickle) or pointed the name at a file of ours. A refused file makes
//! the backend run uncached; one error names the file and its owner.
//!
//! A missing database is created here, `0600` whatever the umask, before
//! SQLite opens it: SQLite creates `-wal` and `-shm` with the mode of the
//! database file, so they are `0600` too.
//!
//! The check runs when a connection is opened (not on every operation), and
//! again after opening, so that sidecar files created meanwhile are seen.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a cache file is not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The name is a symbolic link (to `target`).
    Symlink { path: PathBuf, target: PathBuf },
    /// The file belongs to another user.
    Foreign { path: PathBuf, owner: u32 },
    /// Not a regular file (a directory, a FIFO, a device...).
    NotAFile { path: PathBuf },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Symlink { path, target } => {
                write!(f, "{path:?} is a symbolic link (to {target:?})")
            }
            Refusal::Foreign { path, owner } => write!(
                f,
                "{path:?} is owned by {}, not by this process's user {}",
                user_name(*owner),
                user_name(effective_uid())
            ),
            Refusal::NotAFile { path } => write!(f, "{path:?} is not a regular file"),
        }
    }
}

/// The refusals of one backend, logged once per incident.
#[derive(Debug, Default)]
pub struct Guard {
    /// A refusal was logged and no open succeeded since.
    refusing: AtomicBool,
}

impl Guard {
    /// Before opening `db`: creates it (`0600`) if missing, and checks it
    /// and its sidecar files. False (logged once) if it must not be opened.
    pub fn admit_before_open(&self, db: &Path) -> bool {
        create_private(db);
        self.admit(db)
    }

    /// After opening `db`: the same checks, on what is there now.
    pub fn admit_after_open(&self, db: &Path) -> bool {
        let admitted = self.admit(db);
        if admitted && self.refusing.swap(false, Ordering::Relaxed) {
            log::info!("cachu: cache file {db:?} is usable again; caching resumed");
        }
        admitted
    }

    fn admit(&self, db: &Path) -> bool {
        match check(db) {
            Ok(()) => true,
            Err(refusal) => {
                if !self.refusing.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "cachu: not opening cache file: {refusal}; this cache region runs \
                         uncached (decorated calls run their function). Remove the file, or \
                         configure a file_dir of your own"
                    );
                } else {
                    log::debug!("cachu: still not opening {db:?}: {refusal}");
                }
                false
            }
        }
    }
}

/// The database and the sidecar files SQLite keeps beside it.
fn family(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

/// Every existing member of `db`'s family is a regular file of ours.
pub fn check(db: &Path) -> Result<(), Refusal> {
    family(db).iter().try_for_each(|p| check_one(p))
}

#[cfg(unix)]
fn check_one(path: &Path) -> Result<(), Refusal> {
    use std::os::unix::fs::MetadataExt;
    // Errors other than "absent" are left to SQLite to report.
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).unwrap_or_default();
        return Err(Refusal::Symlink {
            path: path.to_path_buf(),
            target,
        });
    }
    if meta.uid() != effective_uid() {
        return Err(Refusal::Foreign {
            path: path.to_path_buf(),
            owner: meta.uid(),
        });
    }
    if !meta.is_file() {
        return Err(Refusal::NotAFile {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_one(_path: &Path) -> Result<(), Refusal> {
    Ok(())
}

/// Creates `db` empty with mode `0600` (not through a symbolic link) if
/// nothing is there; SQLite makes an empty file a database.
#[cfg(unix)]
fn create_private(db: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(db);
    if let Ok(file) = created {
        // The umask may have taken bits away from 0600: set it exactly.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    // Already there (checked next), or failing (SQLite reports it).
}

#[cfg(not(unix))]
fn create_private(_db: &Path) {}

#[cfg(unix)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

#[cfg(not(unix))]
fn effective_uid() -> u32 {
    0
}

/// `name (uid N)`, or `uid N` when the user has no name.
#[cfg(unix)]
fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data; getpwuid_r writes into `pwd` and `buf`
    // (of the given length) only, and sets `found` to `&pwd` or null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
            let name = std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy();
            return format!("{name} (uid {uid})");
        }
    }
    format!("uid {uid}")
}

#[cfg(not(unix))]
fn user_name(uid: u32) -> String {
    format!("uid {uid}")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_files_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0) };
        let guard = Guard::default();
        let admitted = guard.admit_before_open(&db);
        unsafe { libc::umask(old) };
        assert!(admitted);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
        // An existing file is left as it is.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(guard.admit_before_open(&db));
        assert_eq!(mode(&db), 0o640);
    }

    #[test]
    fn refuses_symlinks_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.db");
        std::fs::write(&target, b"").unwrap();
        let db = dir.path().join("c.db");
        symlink(&target, &db).unwrap();
        let guard = Guard::default();
        assert!(!guard.admit_before_open(&db));
        let err = check(&db).unwrap_err();
        assert!(matches!(err, Refusal::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("elsewhere.db"), "{err}");

        // A dangling link is not followed to create anything.
        let dangling = dir.path().join("d.db");
        symlink(dir.path().join("nothing"), &dangling).unwrap();
        assert!(!guard.admit_before_open(&dangling));
        assert!(!dir.path().join("nothing").exists());

        // A sidecar link is refused as well.
        let db2 = dir.path().join("e.db");
        symlink(&target, dir.path().join("e.db-wal")).unwrap();
        assert!(!guard.admit_before_open(&db2));

        let db3 = dir.path().join("f.db");
        std::fs::create_dir(dir.path().join("f.db-shm")).unwrap();
        assert!(matches!(check(&db3), Err(Refusal::NotAFile { .. })));
    }

    #[test]
    fn a_linked_directory_is_fine() {
        // Only the file's own name is checked: /tmp is a link on macOS.
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        symlink(&real, dir.path().join("linked")).unwrap();
        let db = dir.path().join("linked").join("c.db");
        assert!(Guard::default().admit_before_open(&db));
        let backend = crate::backend::file::FileBackend::open(&db).unwrap();
        crate::backend::Backend::set(&backend, "k", b"v", 60.0).unwrap();
        let hit = crate::backend::Backend::get(&backend, "k")
            .unwrap()
            .unwrap();
        assert_eq!(hit.value, b"v");
        assert!(real.join("c.db").exists());
    }

    #[test]
    fn names_users() {
        assert_eq!(user_name(0), "root (uid 0)");
        assert_eq!(user_name(4_000_000_000), "uid 4000000000");
    }
}

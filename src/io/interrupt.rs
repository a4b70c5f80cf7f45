//! Temporary files removed when the run is interrupted (Ctrl-C, SIGTERM,
//! SIGHUP).
//!
//! A save writes the model and its data file to temporary files beside the
//! target, then renames them into place ([`super::save`]): an error drops
//! them, but a signal ends the process where no destructor runs, and an
//! interrupted save of a multi-GB model left a hidden `.tmpXXXX` of several
//! GB behind. [`install`] blocks those signals in every thread the process
//! starts after it and waits for them on a thread of its own (outside a
//! signal handler, where taking a lock and removing files is safe): there,
//! the files [`Tracked`] holds are removed and the process exits as the
//! signal would have ended it (128 + its number).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static TRACKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A temporary file removed if the run is interrupted while this lives
/// (the file itself is the caller's: renamed into place, or removed on
/// drop by `tempfile`).
pub struct Tracked(PathBuf);

impl Tracked {
    pub fn new(path: &Path) -> Tracked {
        if let Ok(mut t) = TRACKED.lock() {
            t.push(path.to_path_buf());
        }
        Tracked(path.to_path_buf())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Ok(mut t) = TRACKED.lock() {
            if let Some(i) = t.iter().rposition(|p| *p == self.0) {
                t.swap_remove(i);
            }
        }
    }
}

/// The signals an interrupted run ends on.
#[cfg(unix)]
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Block [`SIGNALS`] in this thread (and so in every thread it starts
/// after) and wait for them on a thread of its own. Call first thing in
/// `main`, before any thread is started. Where the signals cannot be
/// blocked, nothing changes (an interrupted save may leave its temporary
/// file, as before).
pub fn install() {
    #[cfg(unix)]
    {
        // SAFETY: a sigset_t filled by sigemptyset/sigaddset before use;
        // pthread_sigmask changes this thread's mask only.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in SIGNALS {
                libc::sigaddset(&mut set, s);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return;
            }
            set
        };
        let waiter = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is a valid, initialised signal set; sigwait
                // writes the signal taken into `sig`.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                remove_tracked();
                eprintln!("\ninterrupted: no output written");
                std::process::exit(128 + sig);
            });
        if waiter.is_err() {
            // No thread to take them: let the signals end the process.
            // SAFETY: as above.
            unsafe {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        }
    }
}

/// Remove every tracked file (what is left of an interrupted save).
fn remove_tracked() {
    if let Ok(t) = TRACKED.lock() {
        remove_files(&t);
    }
}

fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracked file is listed while its guard lives, and dropped, its
    /// guard forgets it; what is listed is removed. (Only this test's files
    /// are removed: other tests' saves track theirs meanwhile.)
    #[test]
    fn tracked_files_are_listed_until_their_guard_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tmp"), dir.path().join("b.tmp"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let ga = Tracked::new(&a);
        {
            let _gb = Tracked::new(&b);
        }
        let mine: Vec<PathBuf> = TRACKED
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(dir.path()))
            .cloned()
            .collect();
        assert_eq!(mine, std::slice::from_ref(&a));
        remove_files(&mine);
        assert!(!a.exists() && b.exists());
        drop(ga);
        assert!(!TRACKED.lock().unwrap().contains(&a));
    }
}

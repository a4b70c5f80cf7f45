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
//! the files [`Tracked`] holds are removed and the signal is raised again,
//! to end the process as it would have.
//!
//! A save that writes a data file moves two files into place, the data
//! file first: a signal taken between the two renames left the new data
//! beside the old model, whose offsets then read the wrong bytes. The
//! renames run inside [`commit`], which the signal thread waits for before
//! it ends the process: the pair is moved whole or not at all (by a signal;
//! a power cut or SIGKILL can still fall between them).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static TRACKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Held while files are moved into place ([`commit`]); the signal thread
/// takes it before it ends the process.
static COMMIT: Mutex<()> = Mutex::new(());

/// Run `f` (the renames that put a save's files in place) with the signal
/// thread kept waiting: a signal taken meanwhile ends the process after
/// `f` returns, not between its steps.
pub fn commit<T>(f: impl FnOnce() -> T) -> T {
    let _held = COMMIT.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// Wait for a [`commit`] under way; none starts while the guard returned
/// lives (the process ending).
fn end_commits() -> std::sync::MutexGuard<'static, ()> {
    COMMIT.lock().unwrap_or_else(|e| e.into_inner())
}

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
/// `main`, before any thread is started. A signal the process was started
/// ignoring (`nohup`'s SIGHUP, a background job's SIGINT) is left ignored:
/// blocked, it would be taken. Where the signals cannot be blocked, nothing
/// changes (an interrupted save may leave its temporary file, as before).
pub fn install() {
    #[cfg(unix)]
    {
        // SAFETY: sigaction with a null new action only reads the current
        // one into `old`; a sigset_t is filled by sigemptyset/sigaddset
        // before use; pthread_sigmask changes this thread's mask only.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            let mut any = false;
            for s in SIGNALS {
                let mut old: libc::sigaction = std::mem::zeroed();
                let ignored = libc::sigaction(s, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN;
                if !ignored {
                    libc::sigaddset(&mut set, s);
                    any = true;
                }
            }
            if !any || libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
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
                let _no_commit = end_commits();
                remove_tracked();
                eprintln!("\ninterrupted");
                // Ended by the signal, as without this thread: a shell's
                // loop stops on a child Ctrl-C killed, not on one that
                // exited 130. SAFETY: the signal's action set back to the
                // default, then unblocked in this thread and raised here.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    let mut one: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut one);
                    libc::sigaddset(&mut one, sig);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
                    libc::raise(sig);
                }
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

    /// What the signal thread does waits for a commit under way: the files
    /// the commit moves are all in place when it runs.
    #[test]
    fn an_interruption_waits_for_the_commit_under_way() {
        use std::sync::mpsc;
        let dir = tempfile::tempdir().unwrap();
        let (data, model) = (dir.path().join("m.onnx.data"), dir.path().join("m.onnx"));
        let (started, wait_started) = mpsc::channel();
        let (go, wait_go) = mpsc::channel::<()>();
        let (d, m) = (data.clone(), model.clone());
        let saver = std::thread::spawn(move || {
            commit(|| {
                std::fs::write(&d, b"data").unwrap();
                started.send(()).unwrap();
                // The signal thread starts meanwhile (below).
                wait_go.recv().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(50));
                std::fs::write(&m, b"model").unwrap();
            })
        });
        wait_started.recv().unwrap();
        let (d, m) = (data.clone(), model.clone());
        let interrupted = std::thread::spawn(move || {
            let _held = end_commits();
            (d.exists(), m.exists())
        });
        go.send(()).unwrap();
        saver.join().unwrap();
        assert_eq!(interrupted.join().unwrap(), (true, true));
    }
}

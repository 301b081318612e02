//! Programs the test bed starts: each in its own process group, with its
//! output in a log file, stopped by process id when dropped (also when a
//! test panics).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// A running program and its process group.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
}

impl Daemon {
    /// Starts `command` in a new process group, appending its stdout and
    /// stderr to `log`.
    pub fn spawn(command: &mut Command, log: &Path) -> std::io::Result<Daemon> {
        use std::os::unix::process::CommandExt as _;
        let log = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own group, so stopping it reaches every child it forks.
            .process_group(0)
            .spawn()?;
        Ok(Daemon { child })
    }

    /// The main process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        let pid = i32::try_from(self.child.id()).map_err(|_| nix::Error::ESRCH)?;
        killpg(Pid::from_raw(pid), signal)
    }

    fn stop(&mut self) {
        // A paused group must run again to act on SIGTERM.
        let _ = self.signal(Signal::SIGCONT);
        let _ = self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    /// SIGTERM to the process group, SIGKILL after 3 s.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Finds a program on `PATH` (or in the sbin directories, where Debian puts
/// daemons).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

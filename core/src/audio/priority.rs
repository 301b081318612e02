//! Audio priority for the threads that keep a device fed: with the CPU
//! busy, a thread at the default priority can wait longer than the 10 ms of
//! audio queued for the device, and the listener hears a gap. Android runs
//! its own audio threads at `THREAD_PRIORITY_AUDIO` (nice −16), and VoIP
//! apps raise theirs the same way.

/// Nice value of Android's audio threads (`THREAD_PRIORITY_AUDIO`).
const AUDIO_NICE: libc::c_int = -16;

/// Raises the calling thread to audio priority. Where that is not allowed
/// (no `CAP_SYS_NICE`, `RLIMIT_NICE` too low) the thread keeps its
/// priority, and the log says so.
// The audio edge: this module's one system call, which std does not wrap.
#[allow(unsafe_code)]
pub fn raise_current_thread() {
    // SAFETY: setpriority takes three integers and touches no memory of
    // ours. On Linux, PRIO_PROCESS with who = 0 names the calling thread
    // alone (each thread has its own nice value), so no other thread or
    // process changes priority.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, AUDIO_NICE) };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "audio thread keeps its default priority"
        );
    }
}

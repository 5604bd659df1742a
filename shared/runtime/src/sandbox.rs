//! Bounded template work: a rendering runs in a forked child process with an address-space
//! limit and a deadline, so a template that allocates without bound or loops until its
//! fuel runs out cannot abort or freeze the server (docs/semantics.md, "Template limits").
//!
//! Why a process: minijinja bounds `str * n` but not `~`, `+` on lists, `replace`, … and a
//! failed allocation aborts the whole process, so no check inside the engine can catch
//! every way to grow a value. The kernel can: in the child, a too-large allocation fails
//! and ends the child alone. The caller runs this on a blocking thread.

use std::time::{Duration, Instant};

/// Address space a rendering may add to what the process already maps.
pub const TEMPLATE_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

/// Why a bounded rendering failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SandboxError(pub String);

/// Runs `work` in a child process within [`TEMPLATE_MEMORY_BYTES`] and `time`; its
/// `Ok` text or `Err` message comes back through a pipe.
#[cfg(target_os = "linux")]
pub fn isolated(
    time: Duration,
    work: impl FnOnce() -> Result<String, String>,
) -> Result<String, SandboxError> {
    use std::io::Read;
    use std::os::fd::FromRawFd;

    sluice_core::template::prepare();
    let address_space = current_address_space();
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError(format!(
            "cannot start the template process: {}",
            std::io::Error::last_os_error()
        )));
    }
    let [read_fd, write_fd] = fds;
    // SAFETY: the child only renders (allocating through the fork-safe system allocator,
    // touching no lock another thread may hold: the template environment is built above)
    // and leaves with `_exit`, never returning into the parent's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let error = std::io::Error::last_os_error();
        // SAFETY: both descriptors are ours and open.
        unsafe {
            libc::close(read_fd);
            libc::close(write_fd);
        }
        return Err(SandboxError(format!(
            "cannot start the template process: {error}"
        )));
    }
    if pid == 0 {
        // SAFETY: plain system calls on this process's own descriptors and limits.
        unsafe {
            libc::close(read_fd);
            // Dies with the thread that waits for it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The parent's handlers (tokio's, which write to the parent's wake-up pipe)
            // are not the child's: a signal ends it plainly.
            for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(signal, libc::SIG_DFL);
            }
            let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if devnull >= 0 {
                libc::dup2(devnull, 2);
            }
            if let Some(current) = address_space {
                let limit = current.saturating_add(TEMPLATE_MEMORY_BYTES);
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                libc::setrlimit(libc::RLIMIT_AS, &rlimit);
            }
            let cpu = time.as_secs().saturating_add(1);
            let rlimit = libc::rlimit {
                rlim_cur: cpu,
                rlim_max: cpu.saturating_add(1),
            };
            libc::setrlimit(libc::RLIMIT_CPU, &rlimit);
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .unwrap_or_else(|_| Err("the template engine failed".to_string()));
        let (tag, body) = match &result {
            Ok(text) => (b'0', text.as_bytes()),
            Err(message) => (b'1', message.as_bytes()),
        };
        let ok = write_all(write_fd, &[tag]) && write_all(write_fd, body);
        // SAFETY: ends the child without running the parent's destructors or atexit hooks.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    }
    // SAFETY: the parent's copy of the write end is ours to close.
    unsafe { libc::close(write_fd) };
    // SAFETY: `read_fd` is an open descriptor owned from here on by the File.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(read_fd) };
    let deadline = Instant::now() + time;
    let mut received = Vec::new();
    let mut timed_out = false;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !readable_within(read_fd, left) {
            timed_out = true;
            break;
        }
        match pipe.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if timed_out {
        // SAFETY: `pid` is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let status = reap(pid);
    if timed_out {
        return Err(SandboxError(format!(
            "the template did not finish within {} seconds (the step's timeout_seconds)",
            time.as_secs_f64()
        )));
    }
    if let Some(signal) = status
        .filter(|s| libc::WIFSIGNALED(*s))
        .map(|s| libc::WTERMSIG(s))
    {
        return Err(SandboxError(match signal {
            libc::SIGABRT | libc::SIGSEGV | libc::SIGBUS => format!(
                "the template needed more than {} MB of memory and was stopped (see \"Template limits\")",
                TEMPLATE_MEMORY_BYTES / (1024 * 1024)
            ),
            libc::SIGXCPU | libc::SIGKILL => format!(
                "the template did not finish within {} seconds (the step's timeout_seconds)",
                time.as_secs_f64()
            ),
            other => format!("the template process ended with signal {other}"),
        }));
    }
    match received.split_first() {
        Some((b'0', text)) => String::from_utf8(text.to_vec())
            .map_err(|_| SandboxError("the rendering is not UTF-8".into())),
        Some((_, message)) => Err(SandboxError(String::from_utf8_lossy(message).into_owned())),
        None => Err(SandboxError(
            "the template process ended without a result".into(),
        )),
    }
}

/// Elsewhere (no fork and rlimits): the rendering runs here, bounded by fuel and output
/// size only.
#[cfg(not(target_os = "linux"))]
pub fn isolated(
    _time: Duration,
    work: impl FnOnce() -> Result<String, String>,
) -> Result<String, SandboxError> {
    work().map_err(SandboxError)
}

#[cfg(target_os = "linux")]
fn write_all(fd: libc::c_int, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writes from a live slice to our own descriptor.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Waits until `fd` has data or is closed, at most `time`.
#[cfg(target_os = "linux")]
fn readable_within(fd: libc::c_int, time: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = time.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, millis) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return n > 0;
    }
}

/// Reaps the child; its wait status.
#[cfg(target_os = "linux")]
fn reap(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// The process's mapped address space in bytes.
#[cfg(target_os = "linux")]
fn current_address_space() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use serde_json::Map;
    use sluice_core::template;

    fn render(source: &str, time: Duration) -> Result<String, SandboxError> {
        let source = source.to_string();
        isolated(time, move || {
            template::render(&source, &Map::new()).map_err(|e| e.0)
        })
    }

    #[test]
    fn renders_in_a_child_process() {
        assert_eq!(
            render("{{ 6 * 7 }}", Duration::from_secs(10)).unwrap(),
            "42"
        );
        let err = render("{{ nope(", Duration::from_secs(10)).unwrap_err();
        assert!(err.0.contains("syntax error"), "{err}");
    }

    #[test]
    fn a_template_that_doubles_a_string_forty_times_fails_alone() {
        let doubling = "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
        let err = render(doubling, Duration::from_secs(60)).unwrap_err();
        assert!(err.0.contains("MB of memory"), "{err}");
        // The process is still here and renders the next template.
        assert_eq!(render("ok", Duration::from_secs(10)).unwrap(), "ok");
    }

    #[test]
    fn every_way_to_grow_a_value_is_bounded() {
        for growth in [
            // Lists doubled with `+`.
            "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}",
            // `replace` multiplying a string, without any loop.
            "{{ ('x' * 1000) | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') | length }}",
            // Recursion passing doubled strings down.
            "{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s | length }}{% endmacro %}{{ d('0123456789abcdef', 40) }}",
            // Repetition within minijinja's own bound, many times over.
            "{% set ns = namespace(s='') %}{% for i in range(20) %}{% set ns.s = ns.s ~ ('x' * 90000000) %}{% endfor %}{{ ns.s | length }}",
        ] {
            let err = render(growth, Duration::from_secs(60)).unwrap_err();
            assert!(
                err.0.contains("MB of memory") || err.0.contains("steps of work"),
                "{growth}: {err}"
            );
        }
        assert_eq!(
            render("still here", Duration::from_secs(10)).unwrap(),
            "still here"
        );
    }

    #[test]
    fn the_deadline_stops_a_slow_template() {
        // Fuel would stop it later; the deadline comes first.
        let slow =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = render(slow, Duration::from_millis(50)).unwrap_err();
        assert!(err.0.contains("did not finish within"), "{err}");
    }
}

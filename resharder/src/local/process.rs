//! Starting and stopping the local cluster's processes.
//!
//! Every process gets its own process group, so a Ctrl-C at the terminal reaches only
//! `shardctl`, which then stops the cluster in order (proxy, then MariaDB, then etcd).

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `cmd` in the background with output appended to `log`. Returns its pid.
pub fn spawn(cmd: &mut Command, log: &Path) -> Result<u32> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let pid = child.id();
    // The child is reaped by `wait_exit`/`stop`; dropping the handle does not kill it.
    std::mem::forget(child);
    Ok(pid)
}

/// When `pid` started, in clock ticks since boot (`/proc/<pid>/stat`, field 22). With the
/// pid it names one process: a pid reused after a reboot or a crash has another.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive and still the process that started at `started` (0: not
/// recorded, as in clusters started by older versions: the pid alone is trusted).
pub fn same_process(pid: u32, started: u64) -> bool {
    alive(pid) && (started == 0 || start_ticks(pid) == Some(started))
}

/// Stops `pid` (like [`stop`]) only if it is still the process recorded; a pid now used
/// by another program is left alone. Returns whether it was ours and is gone.
pub fn stop_ours(pid: u32, started: u64, grace: Duration) -> bool {
    if !alive(pid) {
        return true;
    }
    if !same_process(pid, started) {
        eprintln!("pid {pid} now belongs to another program; not signalling it");
        return false;
    }
    stop(pid, grace)
}

/// Whether nothing listens on 127.0.0.1:`port` (it can be bound now).
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// `remembered` if it is still free, else any free port.
pub fn reuse_port(remembered: Option<u16>) -> Result<u16> {
    match remembered {
        Some(p) if p != 0 && port_free(p) => Ok(p),
        _ => free_port(),
    }
}

/// Whether `pid` is alive (and not a zombie we could reap).
pub fn alive(pid: u32) -> bool {
    reap(pid);
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: non-blocking waitpid on a pid; fails harmlessly if it is not our child.
    unsafe {
        libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a pid we started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL. Returns true if it exited in grace.
pub fn stop(pid: u32, grace: Duration) -> bool {
    if !alive(pid) {
        return true;
    }
    signal(pid, libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(pid, libc::SIGKILL);
    let start = Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for local clusters).
///
/// `SG_PORT_RANGE=LOW-HIGH` picks from that range instead of the kernel's ephemeral ports
/// (tests that stop a cluster and start it again on the same ports use a range of their
/// own, so no other cluster started meanwhile is handed those ports).
pub fn free_port() -> Result<u16> {
    if let Some((lo, hi)) = std::env::var("SG_PORT_RANGE").ok().and_then(|r| {
        let (a, b) = r.split_once('-')?;
        Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
    }) {
        // Successive calls start further on: a port handed out is not bound yet.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let start =
            (std::process::id() + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % span;
        for i in 0..span {
            let port = lo + ((start + i) % span) as u16;
            if port_free(port) {
                return Ok(port);
            }
        }
        bail!("no free port in SG_PORT_RANGE={lo}-{hi}");
    }
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `addr`, or `pid` dies.
pub async fn wait_port(
    addr: &str,
    pid: u32,
    timeout: Duration,
    what: &str,
    log: &Path,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if !alive(pid) {
            bail!(
                "{what} exited during startup; see {}:\n{}",
                log.display(),
                tail(log, 15)
            );
        }
        if start.elapsed() > timeout {
            bail!(
                "{what} did not start listening on {addr} within {timeout:?}; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Finds a program: next to the current executable, in $SHARDGATE_BIN_DIR, then on PATH
/// (plus /usr/sbin, where Debian puts mariadbd).
pub fn find_program(name: &str) -> Result<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    if let Ok(d) = std::env::var("SHARDGATE_BIN_DIR") {
        dirs.push(d.into());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            dirs.push(d.to_path_buf());
            if let Some(up) = d.parent() {
                dirs.push(up.to_path_buf());
            }
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.push("/usr/sbin".into());
    dirs.push("/usr/bin".into());
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("cannot find the program {name:?} (looked next to shardctl, in $SHARDGATE_BIN_DIR and on PATH)")
}

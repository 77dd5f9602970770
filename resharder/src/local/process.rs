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
pub fn free_port() -> Result<u16> {
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

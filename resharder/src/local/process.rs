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

/// A process was started on a port another program already listened on: a port handed
/// out by [`free_port`] can be taken by someone else before it is bound. A caller that
/// chose the port may try another (see [`with_free_port`]).
#[derive(Debug)]
pub struct PortTaken {
    pub what: String,
    pub addr: String,
}

impl std::fmt::Display for PortTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} could not listen on {}: another program holds that port",
            self.what, self.addr
        )
    }
}

impl std::error::Error for PortTaken {}

/// Runs `start` on a free port, and on another one while it fails with [`PortTaken`]
/// (up to five ports).
pub async fn with_free_port<T, F, Fut>(start: F) -> Result<T>
where
    F: FnMut(u16) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    with_port(None, start).await
}

/// Like [`with_free_port`], trying `preferred` first while it is free (a cluster
/// directory keeps its ports across down/up).
pub async fn with_port<T, F, Fut>(preferred: Option<u16>, mut start: F) -> Result<T>
where
    F: FnMut(u16) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = None;
    for attempt in 0..5 {
        let port = if attempt == 0 {
            reuse_port(preferred)?
        } else {
            free_port()?
        };
        match start(port).await {
            Err(e) if e.downcast_ref::<PortTaken>().is_some() => last = Some(e),
            other => return other,
        }
    }
    Err(last.expect("five tries"))
}

/// Whether `pid` holds a socket listening on TCP `port` (Linux: `/proc/net/tcp{,6}` and
/// the process's file descriptors). `None` when that cannot be read.
pub fn listens(pid: u32, port: u16) -> Option<bool> {
    let mut inodes = Vec::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "ADDR:PORT" in hex; state 0A is LISTEN; field 9 the inode.
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    if !readable {
        return None;
    }
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            .unwrap_or(false)
    }))
}

/// Waits until `pid` accepts TCP connections on `addr`. Fails when `pid` dies, or with
/// [`PortTaken`] when what answers there is another process (ours is then stopped).
pub async fn wait_port(
    addr: &str,
    pid: u32,
    timeout: Duration,
    what: &str,
    log: &Path,
) -> Result<()> {
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("{what}: {addr:?} is not host:port"))?;
    let start = Instant::now();
    let mut someone_else = false;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            match listens(pid, port) {
                Some(true) | None => return Ok(()),
                Some(false) => someone_else = true,
            }
        }
        let taken = || PortTaken {
            what: what.to_string(),
            addr: addr.to_string(),
        };
        if !alive(pid) {
            let why = tail(log, 15);
            if someone_else || why.to_lowercase().contains("address already in use") {
                return Err(taken().into());
            }
            bail!(
                "{what} exited during startup; see {}:\n{why}",
                log.display()
            );
        }
        if start.elapsed() > timeout {
            stop(pid, Duration::from_secs(5));
            if someone_else {
                return Err(taken().into());
            }
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

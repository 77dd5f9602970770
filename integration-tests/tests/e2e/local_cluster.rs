//! `shardctl up` / `down` on a local cluster (issue 14): a busy port is a clear error, a
//! cluster directory keeps its ports across down/up, and `down` never signals a process
//! that merely reuses a recorded pid.

use shardgate_resharder::local::process::{alive, find_program};
use shardgate_resharder::local::ClusterInfo;

fn shardctl(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(find_program("shardctl").expect("shardctl built"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run shardctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn ports(info: &ClusterInfo) -> Vec<String> {
    let mut v = vec![
        info.etcd.client_port.to_string(),
        info.etcd.peer_port.to_string(),
    ];
    v.extend(
        info.mariadb
            .iter()
            .map(|m| format!("{}={}", m.name, m.port)),
    );
    v.extend(
        info.proxies
            .iter()
            .map(|p| format!("{} {}", p.mysql, p.http)),
    );
    v
}

#[test]
fn up_and_down_are_safe_to_repeat() {
    let dir = std::env::temp_dir().join(format!("sg-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let up = ["up", "--detach", "--shards", "1"];

    // A port another program holds: a clear error, nothing started.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let (ok, out) = shardctl(&dir, &["up", "--detach", "--shards", "1", "--port", &port]);
    assert!(!ok, "up succeeded on a busy port:\n{out}");
    assert!(out.contains("taken by another program"), "{out}");
    drop(busy);

    let (ok, out) = shardctl(&dir, &up);
    assert!(ok, "{out}");
    let first = ClusterInfo::load(&dir).unwrap();
    let (ok, out) = shardctl(&dir, &["down"]);
    assert!(ok, "{out}");
    // Up again: the same ports.
    let (ok, out) = shardctl(&dir, &up);
    assert!(ok, "{out}");
    let second = ClusterInfo::load(&dir).unwrap();
    assert_eq!(ports(&first), ports(&second));
    let (ok, out) = shardctl(&dir, &["down"]);
    assert!(ok, "{out}");

    // The recorded etcd pid now belongs to another program (as after a reboot): down
    // leaves it alone.
    let mut stranger = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let mut info = ClusterInfo::load(&dir).unwrap();
    info.etcd.pid = stranger.id();
    info.save().unwrap();
    let (ok, out) = shardctl(&dir, &["down"]);
    assert!(ok, "{out}");
    assert!(alive(stranger.id()), "down signalled an unrelated process");
    let _ = stranger.kill();
    let _ = stranger.wait();
    let _ = shardctl(&dir, &["down", "--purge"]);
}

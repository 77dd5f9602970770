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
        // Ports of its own, outside the kernel's ephemeral range the other tests' clusters
        // draw from: this test gives its ports back and takes them again.
        .env("SG_PORT_RANGE", "21000-21999")
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
    let busy = std::net::TcpListener::bind("127.0.0.1:21999").unwrap();
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
    let _ = shardctl(&dir, &["down", "--purge", "--yes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shardctl_asks_previews_and_says_what_kind_of_failure() {
    let c = integration_tests::TestCluster::start_with(2, false).await;
    // hash-password reads stdin, never argv.
    let (code, out) = c.shardctl_input(&["hash-password"], "s3cret\n");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.trim(),
        format!(
            "password_hash = \"{}\"\ncaching_sha2_hash = \"{}\"",
            shardgate_config::hash_password("s3cret"),
            shardgate_config::hash_password_sha2("s3cret")
        )
    );

    let store = c.info.store().await.unwrap();
    let before = store.get("keyspaces/customer").await.unwrap().unwrap();
    // A dry run prints the diff and the verdict, and writes nothing.
    let doc = r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}}, "tables": {"t": {"column_vindexes": [{"column": "id", "name": "hash"}]}}}"#;
    let (code, out) = c.shardctl_input(
        &["topo", "put", "keyspaces/customer", "-", "--dry-run"],
        doc,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("+") && out.contains("valid"), "{out}");
    let bad = r#"{"sharded": true, "vindexes": {}, "tables": {"t": {"column_vindexes": [{"column": "id", "name": "nope"}]}}}"#;
    let (code, out) = c.shardctl_input(
        &["topo", "put", "keyspaces/customer", "-", "--dry-run"],
        bad,
    );
    assert_eq!(code, 65, "an invalid change is an invalid request:\n{out}");
    assert!(out.contains("refused"), "{out}");
    let after = store.get("keyspaces/customer").await.unwrap().unwrap();
    assert_eq!(before.mod_revision, after.mod_revision, "a dry run wrote");
    // A stale compare-and-swap is a retryable conflict.
    let (code, out) = c.shardctl_input(
        &[
            "topo",
            "put",
            "keyspaces/customer",
            "-",
            "--expect-revision",
            "1",
        ],
        doc,
    );
    assert_eq!(code, 75, "{out}");
    // Destructive commands want --yes when nobody can be asked.
    let (code, out) = c.shardctl_input(&["topo", "delete", "keyspaces/customer/routing"], "");
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("--yes"), "{out}");

    // explain works offline from a VSchema file.
    let file = c.dir().join("explain-vschema.json");
    std::fs::write(
        &file,
        r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}}, "tables": {"customer": {"column_vindexes": [{"column": "customer_id", "name": "hash"}]}}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(find_program("shardctl").unwrap())
        .args(["--etcd", "127.0.0.1:1", "explain", "--vschema"])
        .arg(&file)
        .args([
            "--keyspace",
            "customer",
            "SELECT name FROM customer WHERE customer_id = 7",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\"route\"") && text.contains("customer_id"),
        "{text}"
    );
}

/// A port handed out by `free_port` can be taken by another test's server before ours
/// binds it (CI saw a resharding test talk to another test's MariaDB, which then shut
/// down under it). A start whose port answers from another process is refused as
/// `PortTaken`, and starts that chose their port themselves move on to another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_never_mistakes_another_process_on_its_port_for_itself() {
    use shardgate_resharder::local::{mariadb, process};
    /// Stops the servers this test started, even when an assertion fails.
    struct Stop(Vec<u32>);
    impl Drop for Stop {
        fn drop(&mut self) {
            for pid in &self.0 {
                process::stop(*pid, std::time::Duration::from_secs(10));
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("sg-ports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let first = mariadb::start("first", &dir.join("first"), process::free_port().unwrap())
        .await
        .unwrap();
    let mut started = Stop(vec![first.pid]);
    let second = mariadb::start("second", &dir.join("second"), first.port).await;
    if let Ok(m) = &second {
        started.0.push(m.pid);
    }
    let err = second.expect_err("a second MariaDB on a taken port was reported as started");
    assert!(
        err.downcast_ref::<process::PortTaken>().is_some(),
        "not PortTaken: {err:#}"
    );
    // Choosing the port itself, a start retries elsewhere.
    let mut tried = Vec::new();
    let third = process::with_free_port(|port| {
        tried.push(port);
        let port = if tried.len() == 1 { first.port } else { port };
        let datadir = dir.join("third");
        async move { mariadb::start("third", &datadir, port).await }
    })
    .await
    .unwrap();
    started.0.push(third.pid);
    assert_ne!(third.port, first.port);
    assert!(tried.len() >= 2, "{tried:?}");
    let mut c = integration_tests::connect(&third.addr(), "").await;
    let datadir: String = mysql_async::prelude::Queryable::query_first(&mut c, "SELECT @@datadir")
        .await
        .unwrap()
        .unwrap();
    assert!(datadir.contains("third"), "{datadir}");
    drop(c);
    drop(started);
    let _ = std::fs::remove_dir_all(&dir);
}

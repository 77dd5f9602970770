use super::*;

#[test]
fn defaults_need_no_file() {
    let c = Config::load(None, Vec::new(), &[]).unwrap();
    assert_eq!(c.proxy.listen, "127.0.0.1:15306");
    assert_eq!(c.topology.cluster, "local");
}

#[test]
fn file_then_env_then_overrides() {
    let dir = std::env::temp_dir().join(format!("sgcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        "[proxy]\nlisten = \"127.0.0.1:1111\"\nmax_connections = 5\n[backend]\npool_size = 3\n",
    )
    .unwrap();
    let env = vec![
        (
            "SHARDGATE_PROXY_LISTEN".to_string(),
            "127.0.0.1:2222".to_string(),
        ),
        (
            "SHARDGATE_TOPOLOGY_ETCD_ENDPOINTS".to_string(),
            "a:1, b:2".to_string(),
        ),
        ("PATH".to_string(), "/bin".to_string()),
    ];
    let overrides = vec![("backend.pool_size".to_string(), "9".to_string())];
    let c = Config::load(Some(&path), env, &overrides).unwrap();
    assert_eq!(c.proxy.listen, "127.0.0.1:2222");
    assert_eq!(c.proxy.max_connections, 5);
    assert_eq!(c.topology.etcd_endpoints, vec!["a:1", "b:2"]);
    assert_eq!(c.backend.pool_size, 9);
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let e = Config::from_toml("[proxy]\nlisten_addr = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("listen_addr"), "{e}");
    let e = Config::from_toml("[proxi]\n").unwrap_err();
    assert!(e.to_string().contains("proxi"), "{e}");
    let e = Config::load(
        None,
        vec![("SHARDGATE_PROXY_LISTN".into(), "x".into())],
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("SHARDGATE_PROXY_LISTN"), "{e}");
}

#[test]
fn bad_values_name_the_setting() {
    let e = Config::from_toml("[proxy]\nlisten = \"nowhere\"\n").unwrap_err();
    assert!(e.to_string().contains("proxy.listen"), "{e}");
    let e = Config::from_toml("[session]\ntransaction_mode = \"xa\"\n").unwrap_err();
    assert!(e.to_string().contains("transaction_mode"), "{e}");
    let e = Config::load(
        None,
        vec![("SHARDGATE_BACKEND_POOL_SIZE".into(), "many".into())],
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("whole number"), "{e}");
    let e =
        Config::from_toml("[[users]]\nname = \"app\"\npassword_hash = \"secret\"\n").unwrap_err();
    assert!(e.to_string().contains("users[0]"), "{e}");
}

#[test]
fn password_hash_matches_mariadb_password_function() {
    // MariaDB: SELECT PASSWORD('secret') = '*14E65567ABDB5135D0CFD9A70B3032C179A49EE7'
    assert_eq!(
        hash_password("secret"),
        "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
    );
    assert_eq!(hash_password(""), "");
    assert!(matches!(
        PasswordHash::parse(&hash_password("x")).unwrap(),
        PasswordHash::DoubleSha1(_)
    ));
    assert_eq!(PasswordHash::parse("").unwrap(), PasswordHash::Empty);
}

#[test]
fn rendered_config_loads_back() {
    let mut c = Config::default();
    c.users.push(UserConfig {
        name: "root".into(),
        password_hash: String::new(),
        hosts: vec!["localhost".into()],
    });
    let again = Config::from_toml(&c.to_toml()).unwrap();
    assert_eq!(again, c);
}

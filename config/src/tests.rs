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
        caching_sha2_hash: String::new(),
        hosts: vec!["localhost".into()],
        require_tls: false,
        role: Role::Admin,
        keyspaces: Vec::new(),
    });
    c.tls.cert_file = "/etc/shardgate/cert.pem".into();
    c.tls.key_file = "/etc/shardgate/key.pem".into();
    c.users.push(UserConfig {
        name: "app".into(),
        password_hash: hash_password("pw"),
        caching_sha2_hash: hash_password_sha2("pw"),
        hosts: vec!["%".into()],
        require_tls: true,
        role: Role::Reader,
        keyspaces: vec!["customer".into()],
    });
    let again = Config::from_toml(&c.to_toml()).unwrap();
    assert_eq!(again, c);
}

#[test]
fn tls_and_user_security_settings_are_checked() {
    let user = |extra: &str| {
        format!(
            "[[users]]\nname = \"u\"\npassword_hash = {:?}\n{extra}\n",
            hash_password("pw")
        )
    };
    let tls = "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
    let cases = [
        ("[tls]\ncert_file = \"c.pem\"\n".to_string(), "tls.cert_file and tls.key_file"),
        (
            "[tls]\nrequire_secure_transport = true\n".to_string(),
            "require_secure_transport",
        ),
        (user("require_tls = true"), "require_tls needs tls.cert_file"),
        (user("caching_sha2_hash = \"*00\""), "caching_sha2_hash must start"),
        (
            "[[users]]\nname = \"u\"\ncaching_sha2_hash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n"
                .to_string(),
            "password_hash is empty",
        ),
    ];
    for (text, want) in cases {
        let e = Config::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    let ok = Config::from_toml(&format!(
        "{tls}require_secure_transport = true\n{}",
        user(&format!(
            "require_tls = true\ncaching_sha2_hash = {:?}",
            hash_password_sha2("pw")
        ))
    ))
    .unwrap();
    assert!(ok.tls.require_secure_transport && ok.users[0].require_tls);
    // The environment reaches the new section.
    let c = Config::load(
        None,
        vec![
            ("SHARDGATE_TLS_CERT_FILE".into(), "c.pem".into()),
            ("SHARDGATE_TLS_KEY_FILE".into(), "k.pem".into()),
            ("SHARDGATE_BACKEND_TLS_CA_FILE".into(), "ca.pem".into()),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.tls.cert_file, "c.pem");
    assert_eq!(c.backend.tls_ca_file, "ca.pem");
}

#[test]
fn tracing_is_off_by_default_and_checked_when_set() {
    let c = Config::default();
    assert!(c.tracing.otlp_endpoint.is_empty());
    assert_eq!(c.tracing.service_name, "shardgate");
    assert_eq!(c.tracing.sample_ratio, 1.0);
    let ok = Config::from_toml(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\nsample_ratio = 0.25\n",
    )
    .unwrap();
    assert_eq!(ok.tracing.sample_ratio, 0.25);
    for good in [
        "https://collector.example:4317",
        "http://[::1]:4317",
        "http://otel-collector",
        "http://localhost:4317/",
    ] {
        let c = Config::from_toml(&format!("[tracing]\notlp_endpoint = {good:?}\n"));
        assert!(c.is_ok(), "{good}: {c:?}");
    }
    for bad in [
        "127.0.0.1:4317",
        "grpc://127.0.0.1:4317",
        "http://",
        "http://host:port",
        "http://[::1:4317",
        "http://a b:1",
    ] {
        let e = Config::from_toml(&format!("[tracing]\notlp_endpoint = {bad:?}\n")).unwrap_err();
        assert!(
            e.to_string().contains("tracing.otlp_endpoint"),
            "{bad}: {e}"
        );
    }
    let e = Config::from_toml("[tracing]\nsample_ratio = 1.5\n").unwrap_err();
    assert!(e.to_string().contains("tracing.sample_ratio"), "{e}");
    let e = Config::from_toml("[tracing]\nsampel_ratio = 0.5\n").unwrap_err();
    assert!(e.to_string().contains("sampel_ratio"), "{e}");
    // Environment variables reach the new section, numbers with a fraction included.
    let c = Config::load(
        None,
        vec![
            (
                "SHARDGATE_TRACING_OTLP_ENDPOINT".into(),
                "http://127.0.0.1:4317".into(),
            ),
            ("SHARDGATE_TRACING_SAMPLE_RATIO".into(), "0.5".into()),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.tracing.otlp_endpoint, "http://127.0.0.1:4317");
    assert_eq!(c.tracing.sample_ratio, 0.5);
}

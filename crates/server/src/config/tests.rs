use secrecy::ExposeSecret;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn secrets_come_from_files_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "a-mounted-secret-of-some-length\n").unwrap();
    let url = dir.path().join("url");
    std::fs::write(&url, "postgres://app:hunter2@db:5432/feeds\r\n").unwrap();
    let s = Settings::load_from(
        None,
        env(&[
            (
                "SHARDFEED_PAGING__TOKEN_SECRET_FILE",
                secret.to_str().unwrap(),
            ),
            ("SHARDFEED_POSTGRES__URL_FILE", url.to_str().unwrap()),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.paging.token_secret.expose_secret(),
        "a-mounted-secret-of-some-length"
    );
    assert_eq!(s.postgres.url(), "postgres://app:hunter2@db:5432/feeds");
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2") && !shown.contains("mounted-secret"));

    // A missing or empty file names the setting and the path, not a secret.
    let refusal = |key: &str, path: &std::path::Path| {
        Settings::load_from(None, env(&[(key, path.to_str().unwrap())]))
            .unwrap_err()
            .to_string()
    };
    let err = refusal(
        "SHARDFEED_POSTGRES__URL_FILE",
        &dir.path().join("nothing-here"),
    );
    assert!(
        err.contains("postgres.url_file") && err.contains("nothing-here"),
        "{err}"
    );
    std::fs::write(&secret, "\n").unwrap();
    let err = refusal("SHARDFEED_PAGING__TOKEN_SECRET_FILE", &secret);
    assert!(
        err.contains("paging.token_secret_file") && err.contains("is empty"),
        "{err}"
    );
    // A short secret from a file fails the same check as one set directly.
    std::fs::write(&secret, "short").unwrap();
    let err = refusal("SHARDFEED_PAGING__TOKEN_SECRET_FILE", &secret);
    assert!(err.contains("at least 16 bytes"), "{err}");
}

#[test]
fn redis_credentials_and_tls_come_from_settings_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let defaults = Settings::load_from(None, env(&[])).unwrap();
    assert!(defaults.redis.username.is_none() && defaults.redis.password.is_none());
    assert!(!defaults.redis.tls && defaults.redis.tls_ca_file.is_none());

    let s = Settings::load_from(
        None,
        env(&[
            ("SHARDFEED_REDIS__USERNAME", "shardfeed"),
            ("SHARDFEED_REDIS__PASSWORD", "redis-hunter2"),
            ("SHARDFEED_REDIS__TLS", "true"),
            ("SHARDFEED_REDIS__TLS_CA_FILE", "/etc/shardfeed/ca.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(s.redis.username.as_deref(), Some("shardfeed"));
    assert_eq!(s.redis.password(), Some("redis-hunter2"));
    assert!(s.redis.tls);
    assert_eq!(
        s.redis.tls_ca_file.as_deref(),
        Some(Path::new("/etc/shardfeed/ca.pem"))
    );
    assert!(!format!("{s:?}").contains("redis-hunter2"));

    // The file wins over the value, as for every other secret.
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "from-the-file\n").unwrap();
    let s = Settings::load_from(
        None,
        env(&[
            ("SHARDFEED_REDIS__PASSWORD", "from-the-env"),
            ("SHARDFEED_REDIS__PASSWORD_FILE", file.to_str().unwrap()),
        ]),
    )
    .unwrap();
    assert_eq!(s.redis.password(), Some("from-the-file"));
    // Empty values are none.
    let s = Settings::load_from(
        None,
        env(&[
            ("SHARDFEED_REDIS__USERNAME", ""),
            ("SHARDFEED_REDIS__PASSWORD", ""),
        ]),
    )
    .unwrap();
    assert!(s.redis.username.is_none() && s.redis.password.is_none());

    let refused = |pairs: &[(&str, &str)]| {
        Settings::load_from(None, env(pairs))
            .unwrap_err()
            .to_string()
    };
    let err = refused(&[("SHARDFEED_REDIS__USERNAME", "shardfeed")]);
    assert!(
        err.contains("redis.username") && err.contains("redis.password"),
        "{err}"
    );
    let err = refused(&[("SHARDFEED_REDIS__TLS_CA_FILE", "/ca.pem")]);
    assert!(err.contains("redis.tls_ca_file"), "{err}");
    let missing = dir.path().join("no-password-here");
    let err = refused(&[("SHARDFEED_REDIS__PASSWORD_FILE", missing.to_str().unwrap())]);
    assert!(
        err.contains("redis.password_file") && err.contains("no-password-here"),
        "{err}"
    );
    let err = refused(&[("SHARDFEED_REDIS__TLS", "maybe")]);
    assert!(err.contains("tls"), "{err}");
}

#[test]
fn postgres_tls_is_one_setting_and_the_url_may_not_contradict_it() {
    let defaults = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(defaults.postgres.tls, PostgresTls::Disable);
    for (value, tls) in [
        ("disable", PostgresTls::Disable),
        ("require", PostgresTls::Require),
        ("verify-full", PostgresTls::VerifyFull),
    ] {
        let s = Settings::load_from(None, env(&[("SHARDFEED_POSTGRES__TLS", value)])).unwrap();
        assert_eq!(s.postgres.tls, tls, "{value}");
    }
    let s = Settings::load_from(
        None,
        env(&[
            ("SHARDFEED_POSTGRES__TLS", "verify-full"),
            (
                "SHARDFEED_POSTGRES__TLS_CA_FILE",
                "/etc/shardfeed/pg-ca.pem",
            ),
            (
                "SHARDFEED_POSTGRES__URL",
                "postgres://app:pg-hunter2@db:5432/feeds?sslmode=require",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.postgres.tls_ca_file.as_deref(),
        Some(Path::new("/etc/shardfeed/pg-ca.pem"))
    );

    let refused = |pairs: &[(&str, &str)]| {
        Settings::load_from(None, env(pairs))
            .unwrap_err()
            .to_string()
    };
    let err = refused(&[("SHARDFEED_POSTGRES__TLS", "verify-ca")]);
    assert!(err.contains("tls"), "{err}");
    let err = refused(&[
        ("SHARDFEED_POSTGRES__TLS", "require"),
        ("SHARDFEED_POSTGRES__TLS_CA_FILE", "/ca.pem"),
    ]);
    assert!(err.contains("postgres.tls_ca_file"), "{err}");
    let err = refused(&[(
        "SHARDFEED_POSTGRES__URL",
        "postgres://app:pg-hunter2@db:5432/feeds?sslmode=require",
    )]);
    assert!(
        err.contains("postgres.tls") && !err.contains("hunter2"),
        "{err}"
    );
    let err = refused(&[
        ("SHARDFEED_POSTGRES__TLS", "require"),
        (
            "SHARDFEED_POSTGRES__URL",
            "postgres://app:pg-hunter2@db/feeds?sslmode=disable",
        ),
    ]);
    assert!(err.contains("sslmode=disable"), "{err}");
    let err = refused(&[(
        "SHARDFEED_POSTGRES__URL",
        "postgres://app:pg-hunter2@db:notaport/feeds",
    )]);
    assert!(
        err.contains("postgres.url") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn defaults_load() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.ingest.listen_addr.port(), 50051);
    assert_eq!(s.aggregator.listen_addr.port(), 50052);
    assert_eq!(s.ingest.metrics_addr.to_string(), "127.0.0.1:9091");
    assert_eq!(s.aggregator.metrics_addr.to_string(), "127.0.0.1:9092");
    assert_eq!(s.redis.nodes.len(), 6);
    assert_eq!(s.telemetry.log_format, LogFormat::Plain);
    assert!(s.telemetry.otlp_endpoint.is_none());
}

#[test]
fn environment_overrides_nested_keys_and_lists() {
    let s = Settings::load_from(
        None,
        env(&[
            ("SHARDFEED_POSTGRES__POOL_SIZE", "3"),
            ("SHARDFEED_REDIS__NODES", "10.0.0.1:7000,10.0.0.2:7001"),
            ("SHARDFEED_TELEMETRY__LOG_FORMAT", "json"),
            ("SHARDFEED_INGEST__RUN_MIGRATIONS", "false"),
            ("OTHER_VAR", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(s.postgres.pool_size, 3);
    assert_eq!(s.redis.nodes, vec!["10.0.0.1:7000", "10.0.0.2:7001"]);
    assert_eq!(s.telemetry.log_format, LogFormat::Json);
    assert!(!s.ingest.run_migrations);
}

#[test]
fn file_layer_sits_between_defaults_and_environment() {
    let dir = std::env::temp_dir().join(format!("shardfeed-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shardfeed.toml");
    std::fs::write(
        &path,
        "[ingest]\nlisten_addr = \"0.0.0.0:6000\"\n[grpc]\nrequest_timeout_ms = 1234\n",
    )
    .unwrap();
    let s = Settings::load_from(
        Some(&path),
        env(&[("SHARDFEED_INGEST__LISTEN_ADDR", "0.0.0.0:7001")]),
    )
    .unwrap();
    assert_eq!(s.ingest.listen_addr.port(), 7001);
    assert_eq!(s.grpc.request_timeout_ms, 1234);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_values_name_the_key() {
    let cases = [
        ("SHARDFEED_POSTGRES__POOL_SIZE", "lots", "pool_size"),
        ("SHARDFEED_INGEST__LISTEN_ADDR", "nowhere", "listen_addr"),
        ("SHARDFEED_AGGREGATOR__METRICS_ADDR", "9092", "metrics_addr"),
        ("SHARDFEED_TELEMETRY__LOG_FORMAT", "xml", "log_format"),
        ("SHARDFEED_REDIS__NODES", "no-port", "redis.nodes"),
        ("SHARDFEED_POSTGRES__POOL_SIZE", "0", "postgres.pool_size"),
    ];
    for (key, value, named) in cases {
        let err = Settings::load_from(None, env(&[(key, value)])).unwrap_err();
        assert!(
            err.to_string().contains(named),
            "{key}={value}: {err} should name {named}"
        );
    }
}

#[test]
fn unknown_keys_are_rejected() {
    let err = Settings::load_from(None, env(&[("SHARDFEED_GRPC__MAX_MSG", "1")])).unwrap_err();
    assert!(err.to_string().contains("max_msg"), "{err}");
}

#[test]
fn missing_file_is_an_error() {
    let err =
        Settings::load_from(Some(Path::new("/nonexistent/shardfeed.toml")), env(&[])).unwrap_err();
    assert!(err.to_string().contains("does not exist"));
}

#[test]
fn the_trace_settings_default_to_the_sdks_own() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.telemetry.sampler, TraceSampler::ParentbasedAlwaysOn);
    assert!(s.telemetry.sampler_arg.is_none());
    assert!(s.telemetry.service_name().is_none());
    assert!(s.telemetry.otlp_endpoint().is_none());
}

#[test]
fn a_ratio_sampler_takes_its_ratio_and_only_it_does() {
    let refused = |pairs: &[(&str, &str)]| {
        Settings::load_from(None, env(pairs))
            .unwrap_err()
            .to_string()
    };
    let s = Settings::load_from(
        None,
        env(&[
            ("SHARDFEED_TELEMETRY__SAMPLER", "parentbased_traceidratio"),
            ("SHARDFEED_TELEMETRY__SAMPLER_ARG", "0.25"),
            ("SHARDFEED_TELEMETRY__SERVICE_NAME", "feeds-eu"),
            ("SHARDFEED_TELEMETRY__OTLP_ENDPOINT", ""),
        ]),
    )
    .unwrap();
    assert_eq!(s.telemetry.sampler, TraceSampler::ParentbasedTraceidratio);
    assert_eq!(s.telemetry.sampler.as_str(), "parentbased_traceidratio");
    assert_eq!(s.telemetry.sampler_arg, Some(0.25));
    assert_eq!(s.telemetry.service_name(), Some("feeds-eu"));
    // Empty is unset.
    assert!(s.telemetry.otlp_endpoint().is_none());

    for (sampler, arg, why) in [
        ("traceidratio", None, "need a ratio"),
        ("always_on", Some("0.5"), "only the traceidratio samplers"),
        ("traceidratio", Some("1.5"), "from 0 to 1"),
        ("traceidratio", Some("NaN"), "from 0 to 1"),
    ] {
        let mut vars = vec![("SHARDFEED_TELEMETRY__SAMPLER", sampler)];
        vars.extend(arg.map(|arg| ("SHARDFEED_TELEMETRY__SAMPLER_ARG", arg)));
        let err = refused(&vars);
        assert!(
            err.contains("telemetry.sampler_arg") && err.contains(why),
            "{sampler} {arg:?}: {err}"
        );
    }
    let err = refused(&[("SHARDFEED_TELEMETRY__SAMPLER", "sometimes")]);
    assert!(err.contains("sampler"), "{err}");
}

//! Bearer-token verification against every kind of configured key, and every way a token is
//! refused.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use shardfeed_server::auth::{
    mint, sign_hs256, verify::Audience, AuthError, Claims, Role, Verifier,
};
use shardfeed_server::Settings;

fn settings(pairs: &[(&str, &str)]) -> Settings {
    let env = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
    Settings::load_from(None, env).expect("settings load")
}

fn dev() -> Settings {
    settings(&[("SHARDFEED_DEV_MODE", "true")])
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str, role: Role) -> Claims {
    let now = now();
    Claims {
        sub: sub.into(),
        role,
        iss: "shardfeed".into(),
        aud: Audience::One("shardfeed".into()),
        exp: now + 600,
        nbf: now,
        iat: now,
    }
}

const DEV_KEY: &str = shardfeed_server::config::DEV_JWT_SECRET;

#[test]
fn a_minted_token_names_its_caller() {
    let s = dev();
    let verifier = Verifier::from_settings(&s).unwrap();
    let user = verifier
        .verify(&mint(&s, "42", Role::User, Duration::from_secs(60)).unwrap())
        .unwrap();
    assert_eq!(
        (user.subject.as_str(), user.role, user.user_id),
        ("42", Role::User, Some(42))
    );
    let service = verifier
        .verify(&mint(&s, "timeline-svc", Role::Service, Duration::from_secs(60)).unwrap())
        .unwrap();
    assert_eq!((service.role, service.user_id), (Role::Service, None));
    // The header form, with any case of the scheme.
    let header = format!(
        "bearer {}",
        mint(&s, "7", Role::User, Duration::from_secs(60)).unwrap()
    );
    assert_eq!(
        verifier.verify_header(header.as_bytes()).unwrap().user_id,
        Some(7)
    );
}

#[test]
fn every_bad_token_is_refused_and_says_which_check_failed() {
    let s = dev();
    let verifier = Verifier::from_settings(&s).unwrap();
    let good = sign_hs256(&claims("1", Role::User), DEV_KEY).unwrap();

    // Payload changed, signature kept: user 1's token made to say user 2.
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    let tampered_payload = b64.encode(payload.replace("\"sub\":\"1\"", "\"sub\":\"2\""));
    assert_ne!(tampered_payload, parts[1]);
    let tampered = format!("{}.{}.{}", parts[0], tampered_payload, parts[2]);

    let other_key = "another-key-that-is-long-enough-for-hs256-signing";
    let expired = {
        let mut c = claims("1", Role::User);
        c.iat = now() - 7200;
        c.nbf = now() - 7200;
        c.exp = now() - 3600;
        c
    };
    let not_yet = {
        let mut c = claims("1", Role::User);
        c.nbf = now() + 3600;
        c
    };
    let future_iat = {
        let mut c = claims("1", Role::User);
        c.iat = now() + 3600;
        c
    };
    let wrong_iss = {
        let mut c = claims("1", Role::User);
        c.iss = "someone-else".into();
        c
    };
    let wrong_aud = {
        let mut c = claims("1", Role::User);
        c.aud = Audience::Many(vec!["billing".into(), "search".into()]);
        c
    };
    let unknown_kid = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("retired-2019".into());
        encode(
            &header,
            &claims("1", Role::User),
            &EncodingKey::from_secret(DEV_KEY.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let user_not_an_id = sign_hs256(&claims("alice", Role::User), DEV_KEY).unwrap();
    let no_exp = {
        #[derive(serde::Serialize)]
        struct NoExp {
            sub: &'static str,
            iss: &'static str,
            aud: &'static str,
            nbf: u64,
            iat: u64,
        }
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("hs256".into());
        let c = NoExp {
            sub: "1",
            iss: "shardfeed",
            aud: "shardfeed",
            nbf: now(),
            iat: now(),
        };
        encode(
            &header,
            &c,
            &EncodingKey::from_secret(DEV_KEY.as_bytes()).unwrap(),
        )
        .unwrap()
    };

    let cases: Vec<(&str, String, AuthError)> = vec![
        ("garbage", "not-a-jwt".into(), AuthError::Malformed),
        (
            "forged",
            sign_hs256(&claims("1", Role::User), other_key).unwrap(),
            AuthError::BadSignature,
        ),
        ("tampered", tampered, AuthError::BadSignature),
        (
            "expired",
            sign_hs256(&expired, DEV_KEY).unwrap(),
            AuthError::Expired,
        ),
        (
            "not yet valid",
            sign_hs256(&not_yet, DEV_KEY).unwrap(),
            AuthError::NotYetValid,
        ),
        (
            "issued in the future",
            sign_hs256(&future_iat, DEV_KEY).unwrap(),
            AuthError::IssuedInFuture,
        ),
        (
            "wrong issuer",
            sign_hs256(&wrong_iss, DEV_KEY).unwrap(),
            AuthError::WrongIssuer,
        ),
        (
            "wrong audience",
            sign_hs256(&wrong_aud, DEV_KEY).unwrap(),
            AuthError::WrongAudience,
        ),
        ("unknown kid", unknown_kid, AuthError::UnknownKey),
        (
            "user subject not an id",
            user_not_an_id,
            AuthError::SubjectNotAUser,
        ),
        ("no exp", no_exp, AuthError::MissingClaim("exp".into())),
    ];
    for (name, token, want) in cases {
        let got = verifier.verify(&token).unwrap_err();
        assert_eq!(got, want, "{name}");
        let message = tonic::Status::from(got).message().to_owned();
        assert!(
            !message.contains(&token) && !message.contains(DEV_KEY),
            "{name}: {message}"
        );
    }
    for header in ["Basic dXNlcjpwdw==", "Bearer", "token-without-scheme"] {
        assert!(
            matches!(
                verifier.verify_header(header.as_bytes()),
                Err(AuthError::NotBearer | AuthError::Malformed)
            ),
            "{header}"
        );
    }
    // Skew within the leeway (30 s by default) is tolerated.
    let mut slightly_early = claims("1", Role::User);
    slightly_early.nbf = now() + 10;
    slightly_early.iat = now() + 10;
    assert!(verifier
        .verify(&sign_hs256(&slightly_early, DEV_KEY).unwrap())
        .is_ok());
}

/// Public keys from PEM files and a JWKS, several at once, each chosen by `kid`; a token may
/// not switch its key's algorithm (an HS256 token "signed" with a public key is refused).
#[test]
fn public_keys_from_pem_files_and_a_jwks_rotate_by_kid() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let es = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let es_old = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.path().join("es.pem"), es.public_key_pem()).unwrap();
    std::fs::write(dir.path().join("ed.pem"), ed.public_key_pem()).unwrap();

    // A JWKS with the old EC key and the Ed25519 key again under another kid.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let point = es_old.public_key_raw(); // 0x04 || x || y
    let jwks = serde_json::json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec-2025", "alg": "ES256",
         "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65])},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-jwks",
         "x": b64.encode(ed.public_key_raw())},
    ]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let toml = format!(
        r#"
dev_mode = false
[paging]
token_secret = "a-production-page-token-secret"
[auth]
jwks_file = "{dir}/jwks.json"
[[auth.public_keys]]
kid = "rsa-1"
algorithm = "RS256"
file = "{fixtures}/rsa-public.pem"
[[auth.public_keys]]
kid = "ec-2026"
algorithm = "ES256"
file = "{dir}/es.pem"
[[auth.public_keys]]
kid = "ed-1"
algorithm = "EdDSA"
file = "{dir}/ed.pem"
"#,
        dir = dir.path().display(),
        fixtures = fixtures.display()
    );
    let file = dir.path().join("shardfeed.toml");
    std::fs::write(&file, toml).unwrap();
    let s = Settings::load_from(Some(&file), Vec::new()).unwrap();
    s.refuse_development_secrets()
        .expect("own keys and secrets start outside development mode");
    let verifier = Verifier::from_settings(&s).unwrap();

    let sign = |alg: Algorithm, kid: &str, key: EncodingKey, sub: &str| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        encode(&header, &claims(sub, Role::Service), &key).unwrap()
    };
    let rsa = std::fs::read(fixtures.join("rsa-private.pem")).unwrap();
    let cases = [
        (
            Algorithm::RS256,
            "rsa-1",
            EncodingKey::from_rsa_pem(&rsa).unwrap(),
        ),
        (
            Algorithm::ES256,
            "ec-2026",
            EncodingKey::from_ec_pem(es.serialize_pem().as_bytes()).unwrap(),
        ),
        (
            Algorithm::ES256,
            "ec-2025",
            EncodingKey::from_ec_pem(es_old.serialize_pem().as_bytes()).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            "ed-1",
            EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            "ed-jwks",
            EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
        ),
    ];
    for (alg, kid, key) in cases {
        let caller = verifier
            .verify(&sign(alg, kid, key, kid))
            .unwrap_or_else(|e| panic!("{kid}: {e}"));
        assert_eq!(caller.subject, kid);
    }
    // The new EC key's token under the old key's kid: the signature does not verify.
    let crossed = sign(
        Algorithm::ES256,
        "ec-2025",
        EncodingKey::from_ec_pem(es.serialize_pem().as_bytes()).unwrap(),
        "x",
    );
    assert_eq!(
        verifier.verify(&crossed).unwrap_err(),
        AuthError::BadSignature
    );
    // Algorithm confusion: HS256 keyed with the public key's bytes, under the RSA kid.
    let public = std::fs::read(fixtures.join("rsa-public.pem")).unwrap();
    let confused = sign(
        Algorithm::HS256,
        "rsa-1",
        EncodingKey::from_secret(&public).unwrap(),
        "x",
    );
    assert_eq!(
        verifier.verify(&confused).unwrap_err(),
        AuthError::WrongAlgorithm
    );
    // No HS256 key and several public keys: a token without a kid cannot pick one.
    let no_kid = encode(
        &Header::new(Algorithm::RS256),
        &claims("x", Role::Service),
        &EncodingKey::from_rsa_pem(&rsa).unwrap(),
    )
    .unwrap();
    assert_eq!(verifier.verify(&no_kid).unwrap_err(), AuthError::NoKeyId);
    // Nor can anyone mint: there is no HS256 key.
    assert!(mint(&s, "1", Role::User, Duration::from_secs(60)).is_err());
}

#[test]
fn outside_development_mode_the_built_in_secrets_are_refused() {
    let err = settings(&[])
        .refuse_development_secrets()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("paging.token_secret is the built-in development secret"),
        "{err}"
    );
    let err = settings(&[(
        "SHARDFEED_PAGING__TOKEN_SECRET",
        "a-production-page-token-secret",
    )])
    .refuse_development_secrets()
    .unwrap_err()
    .to_string();
    assert!(err.contains("no key to verify tokens"), "{err}");
    let err = settings(&[
        (
            "SHARDFEED_PAGING__TOKEN_SECRET",
            "a-production-page-token-secret",
        ),
        ("SHARDFEED_AUTH__HS256_SECRET", DEV_KEY),
    ])
    .refuse_development_secrets()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("auth.hs256_secret is the built-in development key"),
        "{err}"
    );
    assert!(
        !err.contains(DEV_KEY),
        "the message names the setting, not the key: {err}"
    );
    settings(&[
        (
            "SHARDFEED_PAGING__TOKEN_SECRET",
            "a-production-page-token-secret",
        ),
        (
            "SHARDFEED_AUTH__HS256_SECRET",
            "a-production-jwt-key-of-at-least-32-bytes",
        ),
    ])
    .refuse_development_secrets()
    .expect("own secrets are accepted");
    dev()
        .refuse_development_secrets()
        .expect("development mode takes the built-in ones");
    // A short HS256 key is refused at load.
    let err = Settings::load_from(
        None,
        vec![("SHARDFEED_AUTH__HS256_SECRET".into(), "short".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at least 32 bytes"), "{err}");
}

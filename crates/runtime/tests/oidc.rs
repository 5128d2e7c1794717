//! Bearer tokens as JWTs from an OpenID Connect provider, against a real JWKS server (a small
//! HTTP server on a free port serving keys made here: RSA from the openssl CLI, EC P-256 from
//! rcgen) and tokens signed here. Every way a token can be wrong is refused with its own
//! bounded reason, the JWKS is fetched again for a key id it did not know (and only then), and
//! a provider that is down is a 503, not a 401.

#![allow(clippy::unwrap_used)]

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sluice_runtime::auth::{AuthConfig, Authenticator, OidcConfig, Role};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.test/realms/nhs";
const AUDIENCE: &str = "sluice";

/// A signing key and its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn ec_key(kid: &str) -> Key {
    let kp = rcgen::KeyPair::generate().unwrap();
    let raw = kp.public_key_raw();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    Key {
        kid: kid.into(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(&kp.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                    "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..])}),
    }
}

fn rsa_key(kid: &str, dir: &std::path::Path) -> Key {
    let pem = dir.join(format!("{kid}.pem"));
    let st = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&pem)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let modulus = String::from_utf8(out.stdout).unwrap();
    let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
    Key {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": B64.encode(n), "e": "AQAB"}),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn sign(key: &Key, claims: &Value) -> String {
    let mut h = Header::new(key.alg);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, claims, &key.encoding).unwrap()
}

fn claims(roles: Value) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "dr-jones", "exp": now() + 300, "iat": now(), "roles": roles})
}

/// The provider's JWKS endpoint: serves the keys in `keys` and counts the fetches.
struct Jwks {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server() -> Jwks {
    let keys: Arc<Mutex<Vec<Value>>> = Arc::default();
    let fetches = Arc::new(AtomicUsize::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let (k, f) = (k.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"keys": *k.lock().unwrap()}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Jwks { url, keys, fetches }
}

fn config(url: &str) -> AuthConfig {
    AuthConfig {
        oidc: OidcConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: url.into(),
            jwks_min_refetch_secs: 0,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn bearer(t: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    h
}

async fn refusal(a: &Authenticator, token: &str) -> (StatusCode, &'static str) {
    let r = a.authenticate(&bearer(token)).await.expect_err("refused");
    (r.status, r.reason)
}

#[tokio::test]
async fn a_jwt_is_checked_for_signature_time_issuer_audience_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = jwks_server().await;
    let (rsa, ec) = (rsa_key("rsa-1", dir.path()), ec_key("ec-1"));
    *jwks.keys.lock().unwrap() = vec![rsa.jwk.clone(), ec.jwk.clone()];
    let a = Authenticator::new(&config(&jwks.url), "auth").unwrap();

    for key in [&rsa, &ec] {
        let c = a
            .authenticate(&bearer(&sign(key, &claims(json!(["operator", "viewer", "unknown"])))))
            .await
            .unwrap();
        assert_eq!(c.actor, "dr-jones");
        assert_eq!(c.authentication, "oidc");
        assert_eq!(c.roles.iter().copied().collect::<Vec<_>>(), [Role::Viewer, Role::Operator]);
    }

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(json!(["operator"]));
        f(&mut c);
        sign(&rsa, &c)
    };
    let cases: Vec<(String, (StatusCode, &str))> = vec![
        (with(&|c| c["exp"] = json!(now() - 120)), (StatusCode::UNAUTHORIZED, "expired")),
        (
            with(&|c| c["nbf"] = json!(now() + 600)),
            (StatusCode::UNAUTHORIZED, "not_yet_valid"),
        ),
        (
            with(&|c| c["iss"] = json!("https://evil.test")),
            (StatusCode::UNAUTHORIZED, "wrong_issuer"),
        ),
        (
            with(&|c| c["aud"] = json!("another-service")),
            (StatusCode::UNAUTHORIZED, "wrong_audience"),
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            (StatusCode::UNAUTHORIZED, "missing_claim"),
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            (StatusCode::UNAUTHORIZED, "missing_claim"),
        ),
        (with(&|c| c["roles"] = json!(["admin"])), (StatusCode::FORBIDDEN, "no_role")),
    ];
    for (token, want) in cases {
        assert_eq!(refusal(&a, &token).await, want);
    }

    // the payload changed after signing
    let good = sign(&rsa, &claims(json!(["viewer"])));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = B64.encode(claims(json!(["operator"])).to_string());
    assert_eq!(
        refusal(&a, &format!("{}.{forged}.{}", parts[0], parts[2])).await,
        (StatusCode::UNAUTHORIZED, "bad_signature")
    );
    // signed by a key the provider does not publish, under a published key id
    let stranger = Key {
        kid: "rsa-1".into(),
        ..rsa_key("stranger", dir.path())
    };
    assert_eq!(refusal(&a, &sign(&stranger, &claims(json!(["operator"])))).await.1, "bad_signature");
    // alg none, and HMAC with the public key as the secret: never accepted
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims(json!(["operator"])).to_string())
    );
    assert_eq!(refusal(&a, &none).await.1, "malformed_token");
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa-1".into());
    let hmac = jsonwebtoken::encode(
        &hs,
        &claims(json!(["operator"])),
        &EncodingKey::from_secret(rsa.jwk["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    assert_eq!(refusal(&a, &hmac).await.1, "wrong_algorithm");
    // an RSA token whose header claims the EC key's id
    let mut lying = Header::new(Algorithm::RS256);
    lying.kid = Some("ec-1".into());
    let t = jsonwebtoken::encode(&lying, &claims(json!(["operator"])), &rsa.encoding).unwrap();
    assert_eq!(refusal(&a, &t).await.1, "unknown_key");
    assert_eq!(refusal(&a, "not.a.jwt").await.1, "malformed_token");
}

#[tokio::test]
async fn a_new_key_id_fetches_the_jwks_again_and_a_provider_that_is_down_is_not_the_callers_fault() {
    let jwks = jwks_server().await;
    let first = ec_key("2026-01");
    *jwks.keys.lock().unwrap() = vec![first.jwk.clone()];
    let a = Authenticator::new(&config(&jwks.url), "auth").unwrap();
    let token = sign(&first, &claims(json!(["reviewer"])));
    a.authenticate(&bearer(&token)).await.unwrap();
    a.authenticate(&bearer(&token)).await.unwrap();
    let fetched = jwks.fetches.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&fetched),
        "cached: {fetched} fetches (one at start-up, perhaps one more)"
    );

    // the provider rotates: a token with the new key id makes one fetch, then it is known
    let next = ec_key("2026-02");
    jwks.keys.lock().unwrap().push(next.jwk.clone());
    let rotated = sign(&next, &claims(json!(["reviewer"])));
    a.authenticate(&bearer(&rotated)).await.unwrap();
    a.authenticate(&bearer(&rotated)).await.unwrap();
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), fetched + 1);

    // an unknown key id is refused, and with a refetch interval it cannot make the service
    // fetch on every request
    let mut cfg = config(&jwks.url);
    cfg.oidc.jwks_min_refetch_secs = 60;
    let limited = Authenticator::new(&cfg, "auth").unwrap();
    limited.authenticate(&bearer(&token)).await.unwrap();
    let before = jwks.fetches.load(Ordering::SeqCst);
    let unknown = sign(&ec_key("never-published"), &claims(json!(["reviewer"])));
    for _ in 0..5 {
        assert_eq!(refusal(&limited, &unknown).await, (StatusCode::UNAUTHORIZED, "unknown_key"));
    }
    assert!(
        jwks.fetches.load(Ordering::SeqCst) <= before + 1,
        "at most one fetch for unknown key ids"
    );

    // nothing listens where the keys should be: 503, try again
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = Authenticator::new(&config(&format!("http://127.0.0.1:{port}/certs")), "auth").unwrap();
    assert_eq!(refusal(&down, &token).await, (StatusCode::SERVICE_UNAVAILABLE, "jwks_unavailable"));
}

#[tokio::test]
async fn roles_from_a_nested_claim_mapped_through_configured_values() {
    let jwks = jwks_server().await;
    let key = ec_key("k");
    *jwks.keys.lock().unwrap() = vec![key.jwk.clone()];
    let mut cfg = config(&jwks.url);
    cfg.oidc.roles_claim = "realm_access.roles".into();
    cfg.oidc.actor_claim = "preferred_username".into();
    cfg.oidc.role_values = [("sluice-ops".to_owned(), Role::Operator)].into();
    let a = Authenticator::new(&cfg, "auth").unwrap();
    let mut c = claims(json!(null));
    c["realm_access"] = json!({"roles": ["offline_access", "sluice-ops", "operator"]});
    c["preferred_username"] = json!("j.jones");
    let caller = a.authenticate(&bearer(&sign(&key, &c))).await.unwrap();
    assert_eq!(caller.actor, "j.jones");
    assert_eq!(
        caller.roles.iter().copied().collect::<Vec<_>>(),
        [Role::Operator],
        "only mapped values count"
    );
}

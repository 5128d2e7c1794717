//! Bearer-token authentication and roles, one implementation for every HTTP API of Sluice (the
//! FHIR endpoint, the dead-letter API, the identity review API).
//!
//! A caller presents `Authorization: Bearer <token>`. The token is either
//! - a **static token** from the configuration (`auth.tokens`) or a mounted file
//!   (`auth.tokens_file`, e.g. a Kubernetes Secret), each naming its actor and role. Only SHA-256
//!   hashes are kept in memory, and a presented token is compared with every one of them in
//!   time that does not depend on where they differ; or
//! - a **JWT** from an OpenID Connect provider (`auth.oidc`): its signature checked against the
//!   provider's JWKS (fetched from `jwks_url`, cached, fetched again for a key id it does not
//!   know, at most every `jwks_min_refetch_secs`), RS256 or ES256 (only asymmetric algorithms,
//!   chosen by the key, never `none` or HMAC), `exp` and `nbf`, the issuer and the audience; the
//!   actor comes from `actor_claim`, the roles from `roles_claim`.
//!
//! Each API declares a policy: for every route (method and path) the roles that may call it
//! ([`Route`]). [`protect`] puts the check in front of the whole router, so a route without a
//! policy is refused (deny by default), and the handler receives the authenticated [`Caller`].
//! Refusals are `401` (no token, an unknown or invalid token, with `WWW-Authenticate: Bearer`),
//! `403` (a valid token without a role the route needs) or `503` (the JWKS cannot be fetched:
//! not the caller's fault), counted in `sluice_auth_refusals_total{api,reason}` with a bounded
//! reason, and never echo the token. `/metrics`, `/healthz` and `/readyz` are served elsewhere
//! ([`crate::telemetry`]) and carry no patient data.
//!
//! The actor written to audit records and decisions is always the authenticated one: a request
//! body cannot name it.

use crate::config::Secret;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What a caller may do. Each route names the roles that may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May POST FHIR to ingest.
    Sender,
    /// May list dead letters and review items, without payloads or patient data.
    Viewer,
    /// May see dead-letter payloads, replay and discard (each audited).
    Operator,
    /// May see review items with their patient data and decide them (each audited).
    Reviewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Sender, Role::Viewer, Role::Operator, Role::Reviewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Reviewer => "reviewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One static token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// Who uses it: written to audit records and decisions.
    pub actor: String,
    pub role: Role,
    /// At least 16 characters; make it 32 random bytes (e.g. `openssl rand -hex 32`).
    pub token: Secret,
}

/// Tokens as JWTs from an OpenID Connect provider. Off while `issuer` is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The `iss` every token must carry, exactly.
    pub issuer: String,
    /// A value the token's `aud` must hold.
    pub audience: String,
    /// The provider's JWKS (`jwks_uri` of its discovery document). https, or http on a loopback
    /// address only.
    pub jwks_url: String,
    /// PEM CA(s) for the JWKS server's certificate, when it is not publicly trusted.
    pub jwks_ca_file: String,
    /// Where the roles are: a claim name, or a dotted path (`realm_access.roles`); an array of
    /// strings or one space-separated string.
    pub roles_claim: String,
    /// Claim values to roles; empty: a value that is a role's name is that role.
    pub role_values: BTreeMap<String, Role>,
    /// The claim naming the actor.
    pub actor_claim: String,
    /// Accepted algorithms: RS256, RS384, RS512, PS256, ES256, ES384.
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Keys are fetched again when they are older than this.
    pub jwks_refresh_secs: u64,
    /// A token with a key id not in the cache fetches the JWKS again, at most this often.
    pub jwks_min_refetch_secs: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: String::new(),
            jwks_ca_file: String::new(),
            roles_claim: "roles".into(),
            role_values: BTreeMap::new(),
            actor_claim: "sub".into(),
            algorithms: vec!["RS256".into(), "ES256".into()],
            leeway_secs: 30,
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 10,
        }
    }
}

impl OidcConfig {
    pub fn enabled(&self) -> bool {
        !self.issuer.trim().is_empty()
    }
}

/// Who may call an API. Static tokens, OIDC, or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<StaticToken>,
    /// A YAML list of tokens (as `tokens`), read at start-up: a mounted Secret.
    pub tokens_file: String,
    pub oidc: OidcConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("configuration field {field} is invalid: {why}")]
    Invalid { field: String, why: String },
    #[error("{field} {file}: {why}")]
    File { field: String, file: String, why: String },
}

const ALGORITHMS: [(&str, Algorithm); 6] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
];

fn loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

impl AuthConfig {
    /// Whether anyone could ever be let in.
    pub fn configured(&self) -> bool {
        !self.tokens.is_empty() || !self.tokens_file.trim().is_empty() || self.oidc.enabled()
    }

    /// The settings agree with each other; `prefix` is where they sit (`auth`). Files are not
    /// read here (see [`AuthConfig::all_tokens`]).
    pub fn validate(&self, prefix: &str) -> Result<(), AuthError> {
        let invalid = |field: &str, why: &str| {
            Err(AuthError::Invalid {
                field: format!("{prefix}.{field}"),
                why: why.to_owned(),
            })
        };
        if !self.configured() {
            return invalid(
                "tokens",
                "no way to authenticate: give tokens, tokens_file or oidc (every api needs a bearer token)",
            );
        }
        check_tokens(&self.tokens, &format!("{prefix}.tokens"))?;
        let o = &self.oidc;
        if !o.enabled() {
            if o.audience.trim().is_empty() && o.jwks_url.trim().is_empty() {
                return Ok(());
            }
            return invalid("oidc.issuer", "is required when other oidc settings are given");
        }
        if o.audience.trim().is_empty() {
            return invalid("oidc.audience", "is required with oidc.issuer");
        }
        let url = match Url::parse(&o.jwks_url) {
            Ok(u) => u,
            Err(_) => return invalid("oidc.jwks_url", "must be a url (the provider's jwks_uri)"),
        };
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback(&url)) {
            return invalid("oidc.jwks_url", "must be https (http only on a loopback address)");
        }
        if o.algorithms.is_empty() {
            return invalid("oidc.algorithms", "must name at least one algorithm");
        }
        if let Some(a) = o.algorithms.iter().find(|a| !ALGORITHMS.iter().any(|(n, _)| n == a)) {
            return invalid(
                "oidc.algorithms",
                &format!("{a} is not accepted: use RS256, RS384, RS512, PS256, ES256 or ES384"),
            );
        }
        if o.roles_claim.trim().is_empty() {
            return invalid("oidc.roles_claim", "must not be empty");
        }
        if o.actor_claim.trim().is_empty() {
            return invalid("oidc.actor_claim", "must not be empty");
        }
        Ok(())
    }

    /// The configured tokens and those of `tokens_file`, checked.
    pub fn all_tokens(&self, prefix: &str) -> Result<Vec<StaticToken>, AuthError> {
        let mut all = self.tokens.clone();
        if !self.tokens_file.trim().is_empty() {
            let field = format!("{prefix}.tokens_file");
            let file_error = |why: String| AuthError::File {
                field: field.clone(),
                file: self.tokens_file.clone(),
                why,
            };
            let text = std::fs::read_to_string(&self.tokens_file).map_err(|e| file_error(e.kind().to_string()))?;
            // serde's message could quote a token from the file: name the place only
            let more: Vec<StaticToken> = serde_yaml::from_str(&text).map_err(|e| {
                file_error(match e.location() {
                    Some(l) => format!("not a yaml list of tokens (actor, role, token) at line {}", l.line()),
                    None => "not a yaml list of tokens (actor, role, token)".into(),
                })
            })?;
            check_tokens(&more, &field)?;
            all.extend(more);
        }
        let mut seen = BTreeSet::new();
        for t in &all {
            if !seen.insert(t.token.expose()) {
                return Err(duplicate_token(prefix));
            }
        }
        Ok(all)
    }
}

fn duplicate_token(prefix: &str) -> AuthError {
    AuthError::Invalid {
        field: format!("{prefix}.tokens"),
        why: "the same token is given twice: each actor needs a token of its own".into(),
    }
}

fn check_tokens(tokens: &[StaticToken], field: &str) -> Result<(), AuthError> {
    for (i, t) in tokens.iter().enumerate() {
        let why = if t.actor.trim().is_empty() {
            "actor is empty"
        } else if t.token.expose().chars().count() < 16 {
            "token must be at least 16 characters"
        } else if t.token.expose().chars().any(char::is_whitespace) {
            "token must not contain spaces"
        } else {
            continue;
        };
        return Err(AuthError::Invalid {
            field: format!("{field}[{i}]"),
            why: why.into(),
        });
    }
    Ok(())
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: String,
    pub roles: BTreeSet<Role>,
    /// `static` or `oidc`.
    pub authentication: &'static str,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_owned()).collect()
    }
}

/// Why a caller was refused: the HTTP status and a bounded reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Refused {
    const fn unauthenticated(reason: &'static str) -> Refused {
        Refused {
            status: StatusCode::UNAUTHORIZED,
            reason,
        }
    }

    /// Every reason code, for documentation and tests.
    pub const REASONS: [&'static str; 14] = [
        "missing_token",
        "unknown_token",
        "malformed_token",
        "wrong_algorithm",
        "unknown_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "missing_claim",
        "no_role",
        "jwks_unavailable",
        "forbidden",
    ];

    /// A text for the response: fixed per reason, never the token or a claim.
    pub fn text(&self) -> &'static str {
        match self.reason {
            "missing_token" => "a bearer token is required",
            "forbidden" => "this token's role may not do this",
            "jwks_unavailable" => "the token cannot be checked now: the identity provider's keys are unavailable, try again",
            "expired" => "the token has expired",
            _ => "the token is not valid here",
        }
    }
}

pub fn refusals() -> &'static prometheus::IntCounterVec {
    static M: OnceLock<prometheus::IntCounterVec> = OnceLock::new();
    M.get_or_init(|| {
        crate::telemetry::counter(
            "sluice_auth_refusals_total",
            "api requests refused by authentication or role (401, 403, 503) and api tls handshakes refused, by api and bounded reason",
            &["api", "reason"],
        )
    })
}

/// Checks bearer tokens against the static tokens and the OIDC provider.
pub struct Authenticator {
    /// The settings without their inline tokens (only hashes of those are kept, in `inline`):
    /// what a reload of the tokens file needs.
    cfg: AuthConfig,
    inline: Vec<([u8; 32], String, Role)>,
    prefix: String,
    statics: std::sync::RwLock<Statics>,
    oidc: Option<Oidc>,
}

/// The static tokens in force (their SHA-256, actor and role), and the tokens file they came
/// from: it is looked at again at most every [`TOKENS_CHECK`], so a token added or revoked in
/// the file (a Secret update) takes effect without a restart.
struct Statics {
    tokens: Vec<([u8; 32], String, Role)>,
    /// The file's stamp when last read (also after a failed read, so a broken file is read, and
    /// logged, once per change, not on every request).
    stamp: crate::tls::Stamp,
    checked: Instant,
}

/// How often a request may look at the tokens file for a change.
pub const TOKENS_CHECK: Duration = Duration::from_secs(1);

/// Reloads of the tokens file by result, and whether the last one failed.
fn token_reloads() -> &'static (prometheus::IntCounterVec, prometheus::IntGaugeVec) {
    static M: OnceLock<(prometheus::IntCounterVec, prometheus::IntGaugeVec)> = OnceLock::new();
    M.get_or_init(|| {
        (
            crate::telemetry::counter(
                "sluice_auth_tokens_reloads_total",
                "the static tokens file read again after it changed, by result (loaded, failed)",
                &["result"],
            ),
            crate::telemetry::gauge(
                "sluice_auth_tokens_reload_failing",
                "1 while the changed tokens file could not be read (the tokens read before stay in force)",
                &[],
            ),
        )
    })
}

fn hashed(tokens: Vec<StaticToken>) -> Vec<([u8; 32], String, Role)> {
    tokens
        .into_iter()
        .map(|t| (sha256(t.token.expose().as_bytes()), t.actor, t.role))
        .collect()
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.statics.read().map(|s| s.tokens.len()).unwrap_or(0);
        f.debug_struct("Authenticator")
            .field("static_tokens", &n)
            .field("oidc", &self.oidc.is_some())
            .finish()
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn equal_time(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// Reads the tokens file and prepares the JWKS client; the keys are fetched in the
    /// background (a provider that is down does not stop the service: its tokens get `503`
    /// until the keys can be fetched).
    pub fn new(cfg: &AuthConfig, prefix: &str) -> Result<Arc<Authenticator>, AuthError> {
        cfg.validate(prefix)?;
        let stamp = crate::tls::Stamp::of(&[cfg.tokens_file.trim()]);
        let statics = Statics {
            tokens: hashed(cfg.all_tokens(prefix)?),
            stamp,
            checked: Instant::now(),
        };
        // the series shows (0) from the start
        let _ = token_reloads().1.with_label_values::<&str>(&[]);
        let oidc = if cfg.oidc.enabled() {
            Some(Oidc::new(&cfg.oidc, prefix)?)
        } else {
            None
        };
        let auth = Arc::new(Authenticator {
            cfg: AuthConfig {
                tokens: Vec::new(),
                ..cfg.clone()
            },
            inline: hashed(cfg.tokens.clone()),
            prefix: prefix.to_owned(),
            statics: std::sync::RwLock::new(statics),
            oidc,
        });
        if auth.oidc.is_some()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let a = auth.clone();
            handle.spawn(async move {
                if let Some(o) = &a.oidc
                    && let Err(e) = o.jwks.refresh().await
                {
                    tracing::warn!(error = %e, "jwks not fetched at start-up; tokens are checked once it can be");
                }
            });
        }
        Ok(auth)
    }

    /// Reads the tokens file again when it changed (looked at, at most every
    /// [`TOKENS_CHECK`]). A file that cannot be read or checked leaves the tokens in force as
    /// they were (failing closed would lock every sender and operator out), counted, logged at
    /// ERROR and shown by `sluice_auth_tokens_reload_failing` until a change reads cleanly.
    fn reload_tokens_if_changed(&self) {
        let file = self.cfg.tokens_file.trim();
        if file.is_empty() {
            return;
        }
        {
            let s = self.statics.read().unwrap_or_else(|e| e.into_inner());
            if s.checked.elapsed() < TOKENS_CHECK {
                return;
            }
        }
        let mut s = self.statics.write().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() < TOKENS_CHECK {
            return;
        }
        s.checked = Instant::now();
        let stamp = crate::tls::Stamp::of(&[file]);
        if stamp == s.stamp {
            return;
        }
        s.stamp = stamp;
        let (reloads, failing) = token_reloads();
        // the file's tokens (checked, and unique among themselves), then unique against the
        // inline ones, whose hashes are all that is kept of them
        let read = self.cfg.all_tokens(&self.prefix).map(hashed).and_then(|file| {
            if file.iter().any(|(h, _, _)| self.inline.iter().any(|(i, _, _)| i == h)) {
                return Err(duplicate_token(&self.prefix));
            }
            Ok(self.inline.iter().cloned().chain(file).collect())
        });
        match read {
            Ok(tokens) => {
                s.tokens = tokens;
                reloads.with_label_values(&["loaded"]).inc();
                failing.with_label_values::<&str>(&[]).set(0);
                tracing::info!(tokens = s.tokens.len(), "static tokens read again");
            }
            Err(e) => {
                reloads.with_label_values(&["failed"]).inc();
                failing.with_label_values::<&str>(&[]).set(1);
                // the error names the field and file and never quotes the file's content
                tracing::error!(error = %e, "the changed tokens file could not be read; the tokens read before stay in force");
            }
        }
    }

    /// The caller a request's `Authorization` header names.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Refused> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(presented) = presented else {
            return Err(Refused::unauthenticated("missing_token"));
        };
        let hash = sha256(presented.as_bytes());
        self.reload_tokens_if_changed();
        // every token is compared, so the time taken does not say which one nearly matched
        let mut found = None;
        {
            let statics = self.statics.read().unwrap_or_else(|e| e.into_inner());
            for (h, actor, role) in &statics.tokens {
                if equal_time(h, &hash) {
                    found = Some((actor.clone(), *role));
                }
            }
        }
        if let Some((actor, role)) = found {
            return Ok(Caller {
                actor,
                roles: BTreeSet::from([role]),
                authentication: "static",
            });
        }
        match &self.oidc {
            Some(o) if presented.split('.').count() == 3 => o.validate(presented).await,
            _ => Err(Refused::unauthenticated("unknown_token")),
        }
    }
}

/// The provider's keys, cached.
struct Jwks {
    url: String,
    client: reqwest::Client,
    cache: tokio::sync::RwLock<KeyCache>,
    /// One fetch at a time; callers that waited look at the cache again.
    fetching: tokio::sync::Mutex<()>,
    refresh: Duration,
    min_refetch: Duration,
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
    tried: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
enum JwksError {
    #[error("jwks request failed: {0}")]
    Http(String),
    #[error("jwks is not a json key set")]
    NotAKeySet,
}

/// The algorithm a key is for: from its `alg`, or its type and curve; `None` for keys that are
/// not for signatures or not of an accepted kind (symmetric keys are never accepted).
fn key_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let stated = jwk.common.key_algorithm.map(|a| match a {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        KeyAlgorithm::PS256 => Some(Algorithm::PS256),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::ES384 => Some(Algorithm::ES384),
        // symmetric, encryption-only or unsupported: never a signing key here
        _ => None,
    });
    match (&jwk.algorithm, stated) {
        (_, Some(None)) => None,
        (AlgorithmParameters::RSA(_), None) => Some(Algorithm::RS256),
        (AlgorithmParameters::RSA(_), Some(Some(a @ (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256)))) => {
            Some(a)
        }
        (AlgorithmParameters::EllipticCurve(p), None | Some(Some(Algorithm::ES256))) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        (AlgorithmParameters::EllipticCurve(p), None | Some(Some(Algorithm::ES384))) if p.curve == EllipticCurve::P384 => {
            Some(Algorithm::ES384)
        }
        _ => None,
    }
}

impl Jwks {
    async fn refresh(&self) -> Result<(), JwksError> {
        self.cache.write().await.tried = Some(Instant::now());
        let r = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| JwksError::Http(e.without_url().to_string()))?;
        let v: serde_json::Value = r.json().await.map_err(|_| JwksError::NotAKeySet)?;
        let list = v["keys"].as_array().ok_or(JwksError::NotAKeySet)?;
        let mut keys = Vec::new();
        for k in list {
            // a key of a kind this library does not know is skipped, not fatal
            let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
                continue;
            };
            let Some(alg) = key_algorithm(&jwk) else { continue };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
            keys.push((jwk.common.key_id.clone(), alg, key));
        }
        let mut c = self.cache.write().await;
        c.keys = keys;
        c.fetched = Some(Instant::now());
        tracing::debug!(keys = c.keys.len(), "jwks fetched");
        Ok(())
    }

    fn pick(c: &KeyCache, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let mut candidates = c.keys.iter().filter(|(_, a, _)| *a == alg);
        match kid {
            Some(kid) => candidates.find(|(k, _, _)| k.as_deref() == Some(kid)).map(|(_, _, d)| d.clone()),
            // no key id: only when exactly one key could have signed it
            None => {
                let first = candidates.next();
                if candidates.next().is_some() {
                    None
                } else {
                    first.map(|(_, _, d)| d.clone())
                }
            }
        }
    }

    /// The key for a token: from the cache, or after fetching the JWKS again when the cache is
    /// old, or when the key id is unknown and the last fetch was long enough ago.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Refused> {
        {
            let c = self.cache.read().await;
            let fresh = c.fetched.is_some_and(|t| t.elapsed() < self.refresh);
            if fresh && let Some(k) = Jwks::pick(&c, kid, alg) {
                return Ok(k);
            }
        }
        let _one = self.fetching.lock().await;
        {
            let c = self.cache.read().await;
            let fresh = c.fetched.is_some_and(|t| t.elapsed() < self.refresh);
            let recently_tried = c.tried.is_some_and(|t| t.elapsed() < self.min_refetch);
            if let Some(k) = Jwks::pick(&c, kid, alg)
                && (fresh || recently_tried)
            {
                return Ok(k);
            }
            if recently_tried {
                return Err(if c.fetched.is_none() {
                    Refused {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        reason: "jwks_unavailable",
                    }
                } else {
                    Refused::unauthenticated("unknown_key")
                });
            }
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "jwks could not be fetched");
            let c = self.cache.read().await;
            // keys fetched before still serve while the provider is away
            return match Jwks::pick(&c, kid, alg) {
                Some(k) => Ok(k),
                None if c.fetched.is_none() => Err(Refused {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    reason: "jwks_unavailable",
                }),
                None => Err(Refused::unauthenticated("unknown_key")),
            };
        }
        let c = self.cache.read().await;
        Jwks::pick(&c, kid, alg).ok_or(Refused::unauthenticated("unknown_key"))
    }
}

struct Oidc {
    cfg: OidcConfig,
    algorithms: Vec<Algorithm>,
    jwks: Jwks,
}

impl Oidc {
    fn new(cfg: &OidcConfig, prefix: &str) -> Result<Oidc, AuthError> {
        let mut client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        if !cfg.jwks_ca_file.trim().is_empty() {
            let pem = std::fs::read(&cfg.jwks_ca_file).map_err(|e| AuthError::File {
                field: format!("{prefix}.oidc.jwks_ca_file"),
                file: cfg.jwks_ca_file.clone(),
                why: e.kind().to_string(),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| AuthError::File {
                field: format!("{prefix}.oidc.jwks_ca_file"),
                file: cfg.jwks_ca_file.clone(),
                why: "not a pem certificate bundle".into(),
            })?;
            for c in certs {
                client = client.add_root_certificate(c);
            }
        }
        let client = client.build().map_err(|e| AuthError::Invalid {
            field: format!("{prefix}.oidc"),
            why: e.to_string(),
        })?;
        Ok(Oidc {
            algorithms: cfg
                .algorithms
                .iter()
                .filter_map(|a| ALGORITHMS.iter().find(|(n, _)| n == a).map(|(_, alg)| *alg))
                .collect(),
            jwks: Jwks {
                url: cfg.jwks_url.clone(),
                client,
                cache: Default::default(),
                fetching: Default::default(),
                refresh: Duration::from_secs(cfg.jwks_refresh_secs.max(1)),
                min_refetch: Duration::from_secs(cfg.jwks_min_refetch_secs),
            },
            cfg: cfg.clone(),
        })
    }

    async fn validate(&self, token: &str) -> Result<Caller, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refused::unauthenticated("malformed_token"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Refused::unauthenticated("wrong_algorithm"));
        }
        let key = self.jwks.key(header.kid.as_deref(), header.alg).await?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = self.cfg.leeway_secs;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            Refused::unauthenticated(match e.kind() {
                K::InvalidSignature => "bad_signature",
                K::ExpiredSignature => "expired",
                K::ImmatureSignature => "not_yet_valid",
                K::InvalidIssuer => "wrong_issuer",
                K::InvalidAudience => "wrong_audience",
                K::MissingRequiredClaim(_) => "missing_claim",
                K::InvalidAlgorithm => "wrong_algorithm",
                _ => "malformed_token",
            })
        })?;
        let claims = data.claims;
        let actor = claims
            .get(&self.cfg.actor_claim)
            .and_then(|a| a.as_str())
            .filter(|a| !a.trim().is_empty())
            .ok_or(Refused::unauthenticated("missing_claim"))?;
        let mut at = &claims;
        for part in self.cfg.roles_claim.split('.') {
            at = &at[part];
        }
        let values: Vec<&str> = match at {
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            serde_json::Value::String(s) => s.split_whitespace().collect(),
            _ => Vec::new(),
        };
        let roles: BTreeSet<Role> = values
            .iter()
            .filter_map(|v| {
                if self.cfg.role_values.is_empty() {
                    Role::parse(v)
                } else {
                    self.cfg.role_values.get(*v).copied()
                }
            })
            .collect();
        if roles.is_empty() {
            return Err(Refused {
                status: StatusCode::FORBIDDEN,
                reason: "no_role",
            });
        }
        Ok(Caller {
            actor: actor.to_owned(),
            roles,
            authentication: "oidc",
        })
    }
}

/// One route of an API's policy: who may call `method` on `path` (the route as declared, e.g.
/// `/api/dead-letters/{id}`). No roles: public (no patient data behind it).
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub roles: &'static [Role],
}

impl Route {
    pub const fn get(path: &'static str, roles: &'static [Role]) -> Route {
        Route {
            method: Method::GET,
            path,
            roles,
        }
    }

    pub const fn post(path: &'static str, roles: &'static [Role]) -> Route {
        Route {
            method: Method::POST,
            path,
            roles,
        }
    }
}

/// How an API words a refusal (JSON for the APIs, an OperationOutcome for FHIR).
pub type Answer = fn(StatusCode, &'static str, &'static str) -> Response;

/// A JSON refusal: `{"error": text, "reason": code}`.
pub fn json_answer(status: StatusCode, reason: &'static str, text: &'static str) -> Response {
    (status, axum::Json(serde_json::json!({"error": text, "reason": reason}))).into_response()
}

#[derive(Clone)]
struct Guard {
    api: &'static str,
    auth: Arc<Authenticator>,
    policy: Arc<Vec<Route>>,
    answer: Answer,
}

/// Puts authentication and the policy in front of every route of `router`. A route the policy
/// does not name is refused with `403` (deny by default): a new route must be given roles.
pub fn protect(router: axum::Router, api: &'static str, auth: Arc<Authenticator>, policy: &[Route], answer: Answer) -> axum::Router {
    let guard = Guard {
        api,
        auth,
        policy: Arc::new(policy.to_vec()),
        answer,
    };
    router.route_layer(axum::middleware::from_fn_with_state(guard, check))
}

async fn check(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let route = path
        .as_deref()
        .and_then(|p| g.policy.iter().find(|r| r.path == p && r.method == *req.method()));
    let Some(route) = route else {
        return refuse(
            &g,
            Refused {
                status: StatusCode::FORBIDDEN,
                reason: "forbidden",
            },
        );
    };
    if route.roles.is_empty() {
        return next.run(req).await;
    }
    let caller = match g.auth.authenticate(req.headers()).await {
        Ok(c) => c,
        Err(r) => return refuse(&g, r),
    };
    if !route.roles.iter().any(|r| caller.has(*r)) {
        return refuse(
            &g,
            Refused {
                status: StatusCode::FORBIDDEN,
                reason: "forbidden",
            },
        );
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Logs a refused request at WARN, at most once per API and reason every ten seconds (with
/// how many were not logged in between): failed access is an operator's business, and a scan
/// or a sender with a stale token cannot flood the log. No token, claim or path is logged.
fn log_refusal(api: &'static str, reason: &'static str) {
    type Windows = std::collections::HashMap<(&'static str, &'static str), crate::telemetry::Throttle>;
    static WINDOWS: std::sync::OnceLock<std::sync::Mutex<Windows>> = std::sync::OnceLock::new();
    let mut windows = WINDOWS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let t = windows
        .entry((api, reason))
        .or_insert_with(|| crate::telemetry::Throttle::new(std::time::Duration::from_secs(10)));
    match t.check() {
        Some(left_out) => tracing::warn!(api, reason, "api request refused{}", t.more(left_out)),
        None => tracing::debug!(api, reason, "api request refused"),
    }
}

fn refuse(g: &Guard, r: Refused) -> Response {
    refusals().with_label_values(&[g.api, r.reason]).inc();
    log_refusal(g.api, r.reason);
    let mut resp = (g.answer)(r.status, r.reason, r.text());
    if r.status == StatusCode::UNAUTHORIZED {
        let challenge = if r.reason == "missing_token" {
            "Bearer"
        } else {
            "Bearer error=\"invalid_token\""
        };
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    if r.status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(actor: &str, role: Role, t: &str) -> StaticToken {
        StaticToken {
            actor: actor.into(),
            role,
            token: Secret::new(t),
        }
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
        );
        h
    }

    #[tokio::test]
    async fn static_tokens_name_their_actor_and_role_and_nothing_else_passes() {
        let cfg = AuthConfig {
            tokens: vec![
                token("ops", Role::Operator, "operator-token-0123456789"),
                token("viewer", Role::Viewer, "viewer-token-0123456789"),
            ],
            ..Default::default()
        };
        let a = Authenticator::new(&cfg, "auth").expect("valid");
        let c = a.authenticate(&bearer("operator-token-0123456789")).await.expect("known");
        assert_eq!((c.actor.as_str(), c.has(Role::Operator), c.authentication), ("ops", true, "static"));
        assert!(!c.has(Role::Viewer), "a role is not implied by another");
        let r = a.authenticate(&bearer("operator-token-012345678")).await.expect_err("a prefix");
        assert_eq!((r.status, r.reason), (StatusCode::UNAUTHORIZED, "unknown_token"));
        let r = a.authenticate(&HeaderMap::new()).await.expect_err("none");
        assert_eq!(r.reason, "missing_token");
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic b3BzOnB3"));
        assert_eq!(a.authenticate(&basic).await.expect_err("basic").reason, "missing_token");
        assert!(!format!("{a:?}").contains("operator-token"), "no token in debug output");
    }

    #[test]
    fn configuration_errors_name_the_field_and_never_the_token() {
        let e = AuthConfig::default().validate("auth").expect_err("nothing configured");
        assert!(e.to_string().contains("auth.tokens"), "{e}");
        let short = AuthConfig {
            tokens: vec![token("a", Role::Viewer, "short-secret")],
            ..Default::default()
        };
        let e = short.validate("auth").expect_err("short");
        assert!(
            e.to_string().contains("auth.tokens[0]") && !e.to_string().contains("short-secret"),
            "{e}"
        );
        let twice = AuthConfig {
            tokens: vec![
                token("a", Role::Viewer, "same-token-0123456789"),
                token("b", Role::Operator, "same-token-0123456789"),
            ],
            ..Default::default()
        };
        let e = twice.all_tokens("auth").expect_err("shared");
        assert!(!e.to_string().contains("same-token"), "{e}");
        let oidc = |f: &dyn Fn(&mut OidcConfig)| {
            let mut c = AuthConfig::default();
            c.oidc.issuer = "https://idp.example".into();
            c.oidc.audience = "sluice".into();
            c.oidc.jwks_url = "https://idp.example/jwks".into();
            f(&mut c.oidc);
            c.validate("auth")
        };
        oidc(&|_| {}).expect("valid oidc");
        oidc(&|o| o.jwks_url = "http://127.0.0.1:9/jwks".into()).expect("loopback http");
        for (change, field) in [
            (
                &(|o: &mut OidcConfig| o.jwks_url = "http://idp.example/jwks".into()) as &dyn Fn(&mut OidcConfig),
                "auth.oidc.jwks_url",
            ),
            (&|o: &mut OidcConfig| o.audience = String::new(), "auth.oidc.audience"),
            (&|o: &mut OidcConfig| o.algorithms = vec!["HS256".into()], "auth.oidc.algorithms"),
            (&|o: &mut OidcConfig| o.algorithms = vec!["none".into()], "auth.oidc.algorithms"),
        ] {
            let e = oidc(change).expect_err("invalid");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    /// A token added to or removed from the file is in force within a second, without a
    /// restart; a file broken by an edit keeps the tokens read before (and says so).
    #[tokio::test]
    async fn the_tokens_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("tokens.yaml");
        let line = |actor: &str, role: &str, token: &str| format!("- {{actor: \"{actor}\", role: {role}, token: \"{token}\"}}\n");
        let (old, new) = ("old-operator-token-0123456789", "new-operator-token-9876543210");
        std::fs::write(&f, line("Old Op", "operator", old)).expect("write");
        let inline = "inline-viewer-token-5551234567";
        let a = Authenticator::new(
            &AuthConfig {
                tokens_file: f.display().to_string(),
                tokens: vec![token("Inline Viewer", Role::Viewer, inline)],
                ..Default::default()
            },
            "auth",
        )
        .expect("auth");
        assert!(!format!("{:?}", a.cfg).contains(inline), "an inline token kept in plain text");
        assert_eq!(a.authenticate(&bearer(old)).await.expect("old").actor, "Old Op");
        assert_eq!(a.authenticate(&bearer(new)).await.expect_err("not yet").reason, "unknown_token");

        // the old one revoked, a new one issued: a rename over the file, as the kubelet does
        let next = dir.path().join("tokens.next");
        std::fs::write(&next, line("New Op", "operator", new)).expect("write");
        std::fs::rename(&next, &f).expect("rename");
        tokio::time::sleep(TOKENS_CHECK + Duration::from_millis(100)).await;
        assert_eq!(a.authenticate(&bearer(new)).await.expect("new").actor, "New Op");
        assert_eq!(a.authenticate(&bearer(old)).await.expect_err("revoked").reason, "unknown_token");
        assert_eq!(a.authenticate(&bearer(inline)).await.expect("inline kept").actor, "Inline Viewer");
        assert_eq!(token_reloads().1.with_label_values::<&str>(&[]).get(), 0);

        // broken edits, a short token or the inline token again: the tokens in force stay,
        // the failure shows
        std::fs::write(
            &f,
            format!("{}{}", line("New Op", "operator", new), line("Again", "operator", inline)),
        )
        .expect("write");
        tokio::time::sleep(TOKENS_CHECK + Duration::from_millis(100)).await;
        assert_eq!(a.authenticate(&bearer(inline)).await.expect("kept").actor, "Inline Viewer");
        assert_eq!(token_reloads().1.with_label_values::<&str>(&[]).get(), 1);
        std::fs::write(&f, "- {actor: x, role: operator, token: short}\n").expect("write");
        tokio::time::sleep(TOKENS_CHECK + Duration::from_millis(100)).await;
        assert_eq!(a.authenticate(&bearer(new)).await.expect("kept").actor, "New Op");
        assert_eq!(token_reloads().1.with_label_values::<&str>(&[]).get(), 1);
        std::fs::write(&f, line("New Op", "operator", new)).expect("write");
        tokio::time::sleep(TOKENS_CHECK + Duration::from_millis(100)).await;
        assert_eq!(a.authenticate(&bearer(new)).await.expect("fixed").actor, "New Op");
        assert_eq!(token_reloads().1.with_label_values::<&str>(&[]).get(), 0);
    }

    #[test]
    fn a_tokens_file_that_does_not_parse_is_named_without_its_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("tokens.yaml");
        std::fs::write(&f, "- actor: a\n  role: admin\n  token: very-secret-token-value\n").expect("write");
        let cfg = AuthConfig {
            tokens_file: f.display().to_string(),
            ..Default::default()
        };
        let e = cfg.all_tokens("auth").expect_err("unknown role");
        assert!(
            e.to_string().contains("auth.tokens_file") && !e.to_string().contains("very-secret"),
            "{e}"
        );
    }
}

//! The issuer's signing keys: its JWKS document parsed into keys ready to
//! verify ([`parse_key_set`], pure), and the cache the proxy keeps of it
//! ([`IssuerKeys`]): fetched on first use, again in the background when it
//! is older than `max_age`, and at once when a token names a key it does
//! not hold (the issuer rotated), but never more often than once per `min_refresh`,
//! so tokens naming made-up key ids cannot make the gateway hammer the
//! identity provider. A failed fetch keeps the keys it had.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use tokio::runtime::Handle;

use super::jwt::{JwsAlg, TokenError, UnverifiedToken, VerifyingKey, candidates};

/// The most keys read from one document, and its largest size.
const MAX_KEYS: usize = 64;
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

#[derive(Deserialize)]
struct KeySetDocument {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// The verifying keys of a JWKS document, one per (key, algorithm) among
/// `algorithms`: a JWK naming its `alg` gets that one only, an RSA key
/// without one every RSA algorithm allowed. Encryption keys, key types
/// not verified here and malformed keys are skipped, so one odd key does
/// not take the issuer's others down with it.
pub fn parse_key_set(document: &[u8], algorithms: &[JwsAlg]) -> Result<Vec<VerifyingKey>, String> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("the key set is larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let set: KeySetDocument =
        serde_json::from_slice(document).map_err(|error| format!("the key set is not a JWKS document: {error}"))?;
    let mut keys = Vec::new();
    for value in set.keys.into_iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if jwk.usage.as_deref().is_some_and(|usage| usage != "sig") {
            continue;
        }
        for alg in algorithms_of(&jwk, algorithms) {
            if let Some(key) = verifying_key(&jwk, alg) {
                keys.push(VerifyingKey {
                    kid: jwk.kid.clone(),
                    alg,
                    key,
                });
            }
        }
    }
    Ok(keys)
}

fn algorithms_of(jwk: &Jwk, allowed: &[JwsAlg]) -> Vec<JwsAlg> {
    let curve = if jwk.kty == "RSA" { None } else { jwk.crv.as_deref() };
    allowed
        .iter()
        .copied()
        .filter(|alg| alg.key_type() == (jwk.kty.as_str(), curve))
        .filter(|alg| jwk.alg.as_deref().is_none_or(|named| named == alg.name()))
        .collect()
}

fn verifying_key(jwk: &Jwk, alg: JwsAlg) -> Option<ParsedPublicKey> {
    let bytes = |part: &Option<String>| part.as_deref().and_then(|p| URL_SAFE_NO_PAD.decode(p).ok());
    let rsa = |params: &'static RsaParameters| {
        let (n, e) = (bytes(&jwk.n)?, bytes(&jwk.e)?);
        RsaPublicKeyComponents { n: &n[..], e: &e[..] }
            .to_parsed_public_key(params)
            .ok()
    };
    let ec = |algorithm: &'static signature::EcdsaVerificationAlgorithm, size: usize| {
        let (x, y) = (bytes(&jwk.x)?, bytes(&jwk.y)?);
        if x.len() != size || y.len() != size {
            return None;
        }
        let point = [&[4u8][..], &x, &y].concat();
        ParsedPublicKey::new(algorithm, point).ok()
    };
    match alg {
        JwsAlg::RS256 => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        JwsAlg::RS384 => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        JwsAlg::RS512 => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        JwsAlg::PS256 => rsa(&signature::RSA_PSS_2048_8192_SHA256),
        JwsAlg::PS384 => rsa(&signature::RSA_PSS_2048_8192_SHA384),
        JwsAlg::PS512 => rsa(&signature::RSA_PSS_2048_8192_SHA512),
        JwsAlg::ES256 => ec(&signature::ECDSA_P256_SHA256_FIXED, 32),
        JwsAlg::ES384 => ec(&signature::ECDSA_P384_SHA384_FIXED, 48),
        JwsAlg::EdDSA => {
            let x = bytes(&jwk.x).filter(|x| x.len() == 32)?;
            ParsedPublicKey::new(&signature::ED25519, x).ok()
        }
    }
}

/// Where and how often the issuer's keys are fetched.
#[derive(Debug, Clone)]
pub struct KeySource {
    pub issuer: String,
    /// The JWKS address; else the `jwks_uri` of the issuer's discovery
    /// document (`{issuer}/.well-known/openid-configuration`).
    pub jwks_url: Option<String>,
    pub min_refresh: Duration,
    pub max_age: Duration,
    pub timeout: Duration,
}

/// The keys as last fetched.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyingKey>,
    fetched: Option<Instant>,
}

#[derive(Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    jwks_url: Option<String>,
}

/// The proxy's copy of the issuer's keys.
pub struct IssuerKeys {
    source: KeySource,
    algorithms: Vec<JwsAlg>,
    client: reqwest::Client,
    /// The control runtime: fetches run there, not on Pingora's.
    runtime: Handle,
    current: RwLock<Arc<KeySet>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    /// A refresh of a stale set is under way in the background.
    refreshing: AtomicBool,
    /// When the last background refresh began: while the issuer does not
    /// answer, a stale set is retried once per `min_refresh`, not by a task
    /// per request.
    background_started: std::sync::Mutex<Option<Instant>>,
}

impl IssuerKeys {
    pub fn new(source: KeySource, algorithms: Vec<JwsAlg>, runtime: Handle) -> Result<IssuerKeys, String> {
        let client = reqwest::Client::builder()
            .timeout(source.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|error| format!("no HTTP client for the issuer's keys: {error}"))?;
        Ok(IssuerKeys {
            source,
            algorithms,
            client,
            runtime,
            current: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            refreshing: AtomicBool::new(false),
            background_started: std::sync::Mutex::new(None),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key set to verify `token` with. A set holding the token's key
    /// is used at once, and refreshed in the background when it is older
    /// than `max_age`, so no request waits on that fetch; one lacking it
    /// (never fetched, or the issuer rotated) is fetched again first, at
    /// most once per `min_refresh`.
    pub async fn for_token(self: &Arc<Self>, token: &UnverifiedToken<'_>) -> Result<Arc<KeySet>, TokenError> {
        let set = self.current();
        if !candidates(&set.keys, token).is_empty() {
            if set.fetched.is_none_or(|at| at.elapsed() >= self.source.max_age) {
                self.refresh_in_background(&set);
            }
            return Ok(set);
        }
        let set = self.refresh(&set).await;
        if set.fetched.is_none() {
            return Err(TokenError::KeysUnavailable);
        }
        Ok(set)
    }

    /// One background refresh at a time, however many requests find the
    /// set stale while it runs.
    fn refresh_in_background(self: &Arc<Self>, seen: &Arc<KeySet>) {
        {
            let mut started = self.background_started.lock().unwrap_or_else(|e| e.into_inner());
            if started.is_some_and(|at| at.elapsed() < self.source.min_refresh) {
                return;
            }
            if self.refreshing.swap(true, Ordering::AcqRel) {
                return;
            }
            *started = Some(Instant::now());
        }
        let (keys, seen) = (self.clone(), seen.clone());
        self.runtime.spawn(async move {
            keys.refresh(&seen).await;
            keys.refreshing.store(false, Ordering::Release);
        });
    }

    /// Fetches the set again unless another call just did (then its result
    /// is used) or the last attempt was under `min_refresh` ago.
    async fn refresh(&self, seen: &Arc<KeySet>) -> Arc<KeySet> {
        let mut state = self.refresh.lock().await;
        let now = self.current();
        if !Arc::ptr_eq(&now, seen) {
            return now;
        }
        if state
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.source.min_refresh)
        {
            return now;
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch(&mut state).await {
            Ok(keys) => {
                crate::record::metrics::METRICS
                    .jwks_fetches
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(issuer = %self.source.issuer, keys = keys.len(), "fetched the issuer's signing keys");
                let fresh = Arc::new(KeySet {
                    keys,
                    fetched: Some(Instant::now()),
                });
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
                fresh
            }
            Err(error) => {
                crate::record::metrics::METRICS
                    .jwks_fetches
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(issuer = %self.source.issuer, %error, "the issuer's signing keys could not be fetched; the ones held are kept");
                now
            }
        }
    }

    async fn fetch(&self, state: &mut RefreshState) -> Result<Vec<VerifyingKey>, String> {
        let url = match (&self.source.jwks_url, &state.jwks_url) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                let url = self.discover().await?;
                state.jwks_url = Some(url.clone());
                url
            }
        };
        let body = self.get(url).await?;
        parse_key_set(&body, &self.algorithms)
    }

    /// The `jwks_uri` of the issuer's discovery document, which must name
    /// the same issuer.
    async fn discover(&self) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.source.issuer.trim_end_matches('/')
        );
        let body = self.get(url.clone()).await?;
        let discovery: Discovery =
            serde_json::from_slice(&body).map_err(|error| format!("{url} is not a discovery document: {error}"))?;
        if discovery.issuer != self.source.issuer {
            return Err(format!(
                "{url} names issuer `{}`, not `{}`",
                discovery.issuer, self.source.issuer
            ));
        }
        Ok(discovery.jwks_uri)
    }

    async fn get(&self, url: String) -> Result<bytes::Bytes, String> {
        let client = self.client.clone();
        let fetch = async move {
            let response = client.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url} sent more than {MAX_DOCUMENT_BYTES} bytes"));
            }
            Ok(body)
        };
        self.runtime
            .spawn(fetch)
            .await
            .map_err(|error| format!("the key fetch stopped: {error}"))?
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::identity::jwt::tests::{TestKey, b64};

    /// A JWKS server answering its first request and hanging on every
    /// later one; how many it got.
    async fn hanging_after_one(document: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                let document = document.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    if n > 0 {
                        std::future::pending::<()>().await;
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{document}",
                        document.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        (url, served)
    }

    /// A stale set holding the token's key serves the request at once and
    /// is refreshed behind it, once, however many requests come meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_keys_serve_while_one_refresh_runs_behind() {
        use crate::identity::jwt::tests::{claims, rules};

        let key = TestKey::rsa();
        let (url, served) = hanging_after_one(json!({"keys": [key.jwk("k1")]}).to_string()).await;
        let source = KeySource {
            issuer: "https://idp.example.com".into(),
            jwks_url: Some(url),
            min_refresh: Duration::ZERO,
            max_age: Duration::ZERO,
            timeout: Duration::from_secs(30),
        };
        let keys = Arc::new(IssuerKeys::new(source, JwsAlg::ALL.to_vec(), Handle::current()).unwrap());
        let token = key.sign("RS256", Some("k1"), &claims());
        let parsed = crate::identity::jwt::parse(&token, &rules()).unwrap();
        let first = keys.for_token(&parsed).await.unwrap();
        assert!(!candidates(&first.keys, &parsed).is_empty(), "fetched first");
        for _ in 0..20 {
            // The refresh hangs; the requests do not wait for it.
            let set = tokio::time::timeout(Duration::from_secs(5), keys.for_token(&parsed))
                .await
                .expect("a stale set with the key answers at once")
                .unwrap();
            assert!(Arc::ptr_eq(&set, &first));
        }
        for _ in 0..50 {
            if served.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(served.load(Ordering::SeqCst), 2, "one fetch, then one refresh behind");
    }

    #[test]
    fn keys_get_the_algorithms_of_their_type() {
        let rsa = TestKey::rsa();
        let mut named = TestKey::rsa().jwk("named");
        named["alg"] = json!("PS256");
        let mut encryption = TestKey::rsa().jwk("enc");
        encryption["use"] = json!("enc");
        let document = json!({"keys": [
            rsa.jwk("r"), named, encryption, TestKey::ec().jwk("e"), TestKey::ed().jwk("d"),
            {"kty": "oct", "k": b64(b"secret"), "kid": "hmac"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": "short", "x": b64(&[1; 31]), "y": b64(&[1; 32])},
            {"kid": "no-type"}, 7
        ]});
        let keys = parse_key_set(document.to_string().as_bytes(), &JwsAlg::ALL).unwrap();
        let of = |kid: &str| {
            keys.iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .map(|k| k.alg.name())
                .collect::<Vec<_>>()
        };
        assert_eq!(of("r"), ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]);
        assert_eq!(of("named"), ["PS256"]);
        assert_eq!(of("e"), ["ES256"]);
        assert_eq!(of("d"), ["EdDSA"]);
        for skipped in ["enc", "hmac", "broken", "short", "no-type"] {
            assert!(of(skipped).is_empty(), "{skipped}");
        }
        let only_es = parse_key_set(document.to_string().as_bytes(), &[JwsAlg::ES256]).unwrap();
        assert_eq!(only_es.len(), 1);
        assert!(parse_key_set(b"{\"keys\": 1}", &JwsAlg::ALL).is_err());
        assert!(parse_key_set(b"not json", &JwsAlg::ALL).is_err());
    }
}

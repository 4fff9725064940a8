//! Access tokens instead of API keys: a real OpenID provider (npm
//! `oidc-provider`) issues JWT access tokens by the client-credentials
//! grant, and a real `maas proxy` verifies them against the provider's
//! published keys, maps their claims to an organization and a plan, and
//! meters the calls to an application per (organization, client).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use super::harness::{Gateway, error_of, free_port, metric_value, node_dir};

const AUDIENCE: &str = "https://maas.test/api";

const CATALOG: &str = "
backends:
  - {system_name: sim, urls: ['{SIM}']}
products:
  - system_name: alpha
    path_prefix: /alpha
    models: [chat-a]
    backend: sim
    auth: [api_key, oidc]
    token_plans:
      - {group: ml-platform, plan: gold}
      - {group: developers, plan: standard}
  - system_name: beta
    path_prefix: /beta
    models: [chat-b]
    backend: sim
  # Tokens only, of any group.
  - system_name: omega
    path_prefix: /omega
    models: [chat-x]
    backend: sim
    auth: [oidc]
    token_plans: [{plan: open}]
plans:
  - product: alpha
    system_name: gold
    limits: [{metric: hits, period: minute, value: 1000}]
  - product: alpha
    system_name: standard
    limits: [{metric: hits, period: minute, value: 100}]
  - {product: beta, system_name: open}
  - {product: omega, system_name: open}
";

/// An `oidc-provider` process issuing client-credentials tokens.
struct Issuer {
    child: tokio::process::Child,
    port: u16,
    clients: PathBuf,
    key: PathBuf,
}

impl Issuer {
    async fn start(port: u16, clients: &Path, key: &Path) -> Issuer {
        let dir = node_dir(&["oidc-provider"]);
        let mut child = tokio::process::Command::new("node")
            .arg(format!("{dir}/oidc_tokens.mjs"))
            .arg(port.to_string())
            .arg(AUDIENCE)
            .arg(clients)
            .arg(key)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node (apt install nodejs; .ci/run does it)");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"),
            "the OpenID provider did not start: {ready:?}"
        );
        Issuer {
            child,
            port,
            clients: clients.to_owned(),
            key: key.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A token for `client` (its secret is `{client}-secret`) for `resource`.
    async fn token_for(&self, client: &str, resource: &str) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/token", self.url()))
            .basic_auth(client, Some(format!("{client}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&resource={}",
                resource.replace(':', "%3A").replace('/', "%2F")
            ))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "token request of {client}: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn token(&self, client: &str) -> String {
        self.token_for(client, AUDIENCE).await
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Stops it and starts a provider on the same port with a new signing
    /// key: the issuer rotated its keys.
    async fn rotate(self) -> Issuer {
        let (port, clients, key) = (self.port, self.clients.clone(), self.key.clone());
        self.stop().await;
        std::fs::remove_file(&key).unwrap();
        Issuer::start(port, &clients, &key).await
    }
}

fn write_clients(path: &Path, clients: &Value) {
    let mut with_secrets = clients.clone();
    for (id, client) in with_secrets.as_object_mut().unwrap() {
        client["secret"] = json!(format!("{id}-secret"));
    }
    std::fs::write(path, with_secrets.to_string()).unwrap();
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

async fn jwks_fetches(gw: &Gateway) -> u64 {
    metric_value(&gw.metrics(0).await, "maas_jwks_fetches_total", "outcome", "ok").unwrap_or(0)
}

async fn chat(gw: &Gateway, product: &str, model: &str, bearer: &str) -> reqwest::Response {
    gw.chat(&format!("{}/{product}", gw.base()), bearer, model).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_admit_entitled_clients_and_refuse_bad_tokens() {
    let mut gw = Gateway::start(CATALOG, 0, "strict").await;
    let clients = gw.dir.path().join("clients.json");
    let key = gw.dir.path().join("signing-key.json");
    write_clients(
        &clients,
        &json!({
            "ci-bot": {"org_name": "Acme Research", "groups": ["ml-platform", "developers"]},
            "intern-bot": {"org_name": "Acme Research", "groups": ["developers"]},
            "sales-bot": {"org_name": "Acme Research", "groups": ["sales"]},
            "orphan-bot": {"groups": ["developers"]},
            "brief-bot": {"org_name": "Globex", "groups": ["developers"], "ttl": 1},
        }),
    );
    let issuer = Issuer::start(free_port(), &clients, &key).await;
    gw.add_proxy_with_env(
        "strict",
        &[
            ("MAAS_ACCESS_TOKENS_ENABLED", "true"),
            ("MAAS_ACCESS_TOKENS_ISSUER_URL", &issuer.url()),
            ("MAAS_ACCESS_TOKENS_AUDIENCE", AUDIENCE),
            ("MAAS_ACCESS_TOKENS_LEEWAY_SECS", "0"),
            ("MAAS_ACCESS_TOKENS_JWKS_MIN_REFRESH_SECS", "1"),
        ],
    );

    // A valid token: admitted on the plan its groups give, metered to the
    // application made for the client in its organization.
    let token = issuer.token("ci-bot").await;
    assert_eq!(header_of(&token)["alg"], "RS256");
    let response = chat(&gw, "alpha", "chat-a", &token).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(
        response.headers()["x-ratelimit-limit-requests"],
        "1000",
        "the gold plan"
    );
    let answer: Value = response.json().await.unwrap();
    let total = answer["usage"]["total_tokens"].as_u64().unwrap();
    let binding = maas_store::model::AccountBinding {
        issuer: issuer.url(),
        claim_value: "Acme Research".into(),
    };
    let acme = gw
        .store
        .find_account_by_binding(&binding)
        .await
        .unwrap()
        .expect("the organization's account");
    let apps = gw
        .store
        .list_applications(
            &maas_store::ApplicationFilter {
                account_id: Some(acme.id.clone()),
                ..Default::default()
            },
            &maas_store::Page::first(10),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(apps.len(), 1, "{apps:?}");
    let app = &apps[0];
    assert_eq!(
        (app.token_client.as_deref(), app.plan.as_str(), app.product.as_str()),
        (Some("ci-bot"), "gold", "alpha")
    );
    // Settled once the response ended: the store has it within moments.
    for _ in 0..50 {
        if gw.stored(&app.id, "total_tokens").await == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gw.stored(&app.id, "total_tokens").await, total);
    gw.assert_stored_as_served(&app.id).await;

    // Another client of the organization is another application, on its plan.
    let response = chat(&gw, "alpha", "chat-a", &issuer.token("intern-bot").await).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-ratelimit-limit-requests"],
        "100",
        "the standard plan"
    );

    // The official Python SDK takes the token as its API key, streams on
    // it, and reads a refusal as the error class OpenAI would raise.
    super::harness::require_python_openai();
    let script = r#"
import json, sys
import openai
base, token, refused = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)
answer = client.chat.completions.create(model="chat-a", messages=[{"role": "user", "content": "Hi"}])
stream = client.chat.completions.create(model="chat-a", messages=[{"role": "user", "content": "Hi"}],
                                        stream=True, stream_options={"include_usage": True})
streamed = [chunk.usage.total_tokens for chunk in stream if chunk.usage]
try:
    openai.OpenAI(base_url=base + "/v1", api_key=refused, max_retries=0).chat.completions.create(
        model="chat-a", messages=[{"role": "user", "content": "Hi"}])
    error = None
except openai.PermissionDeniedError as e:
    error = ["PermissionDeniedError", e.code]
print(json.dumps({"total": answer.usage.total_tokens, "streamed": streamed, "error": error}))
"#;
    let sales_token = issuer.token("sales-bot").await;
    let report = super::harness::run_json_script("python3", &["-c", script, gw.base(), &token, &sales_token]).await;
    assert!(report["total"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["streamed"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(
        report["error"],
        json!(["PermissionDeniedError", "not_entitled"]),
        "{report}"
    );

    // Refusals, each with the reason the token is refused.
    let (status, error) = error_of(chat(&gw, "alpha", "chat-a", &issuer.token("sales-bot").await).await).await;
    assert_eq!((status, error["code"].as_str()), (403, Some("not_entitled")), "{error}");
    let (status, error) = error_of(chat(&gw, "alpha", "chat-a", &issuer.token("orphan-bot").await).await).await;
    assert_eq!(status, 401, "{error}");
    assert!(error["message"].as_str().unwrap().contains("org_name"), "{error}");
    let other_audience = issuer.token_for("ci-bot", "https://other.test/api").await;
    let response = chat(&gw, "alpha", "chat-a", &other_audience).await;
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let (status, error) = error_of(response).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("audience"), "{error}");
    // Tampered: the organization of a valid token rewritten, the signature kept.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["org_name"] = json!("Globex");
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let (status, error) = error_of(chat(&gw, "alpha", "chat-a", &parts.join(".")).await).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("signature"), "{error}");
    // Expired (a one-second token, no leeway).
    let brief = issuer.token("brief-bot").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, error) = error_of(chat(&gw, "alpha", "chat-a", &brief).await).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("expired"), "{error}");
    // A product that takes keys only: the token is no key there.
    let (status, error) = error_of(chat(&gw, "beta", "chat-b", &token).await).await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["code"], "invalid_api_key");

    // The shared endpoint: the model names the product, the groups its plan.
    let sales = issuer.token("sales-bot").await;
    let response = chat(&gw, "", "chat-x", &sales).await;
    assert_eq!(response.status(), 200, "omega takes every token of the issuer");
    let (status, error) = error_of(chat(&gw, "", "chat-a", &sales).await).await;
    assert_eq!((status, error["code"].as_str()), (403, Some("not_entitled")));
    let (status, error) = error_of(chat(&gw, "", "chat-b", &token).await).await;
    assert_eq!(status, 403, "beta takes keys only: {error}");
    let response = chat(&gw, "", "chat-a", &token).await;
    assert_eq!(response.status(), 200);
    let listed: Value = gw
        .http
        .get(format!("{}/v1/models", gw.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["id"], "chat-a", "{listed}");
    // A product of tokens only has no key subscriptions, refuses any key
    // on its route, and says what it takes.
    let subscribed = gw
        .store
        .create_application(maas_store::NewApplication {
            account_id: acme.id.clone(),
            name: "keyed".into(),
            description: String::new(),
            product: "omega".into(),
            plan: "open".into(),
        })
        .await;
    assert!(subscribed.is_err(), "no application with keys on a product of tokens");
    let (_, alpha_key) = gw.app_key("keyed", "alpha", "gold").await;
    let (status, error) = error_of(chat(&gw, "omega", "chat-x", &alpha_key).await).await;
    assert_eq!(status, 401);
    assert!(error["message"].as_str().unwrap().contains("access tokens"), "{error}");
    // An application an admin suspended refuses its client's tokens.
    let seen = metric_value(&gw.metrics(0).await, "maas_store_changes_total", "kind", "application").unwrap_or(0);
    gw.store
        .act_on_application(
            &app.id,
            maas_store::ApplicationAction::Suspend,
            maas_store::Precondition::Any,
        )
        .await
        .unwrap();
    gw.await_changes(0, "application", seen + 1).await;
    let (status, error) = error_of(chat(&gw, "alpha", "chat-a", &token).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (403, Some("application_suspended")),
        "{error}"
    );
    gw.store
        .act_on_application(
            &app.id,
            maas_store::ApplicationAction::Resume,
            maas_store::Precondition::Any,
        )
        .await
        .unwrap();
    gw.await_changes(0, "application", seen + 2).await;

    // Another issuer with the very same signing key: the signature verifies,
    // the issuer does not.
    let impostor = Issuer::start(free_port(), &clients, &key).await;
    let (status, error) = error_of(chat(&gw, "alpha", "chat-a", &impostor.token("ci-bot").await).await).await;
    assert_eq!(status, 401);
    assert!(
        error["message"].as_str().unwrap().contains(&impostor.url()),
        "names the issuer: {error}"
    );
    impostor.stop().await;

    // Losing a group takes effect with the next token: the application
    // moves to the plan the groups still give, and then to none.
    write_clients(
        &clients,
        &json!({"ci-bot": {"org_name": "Acme Research", "groups": ["developers"]}}),
    );
    let response = chat(&gw, "alpha", "chat-a", &issuer.token("ci-bot").await).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-limit-requests"], "100");
    assert_eq!(
        gw.store.get_application(&app.id).await.unwrap().unwrap().plan,
        "standard"
    );
    write_clients(
        &clients,
        &json!({"ci-bot": {"org_name": "Acme Research", "groups": []}}),
    );
    let (status, _) = error_of(chat(&gw, "alpha", "chat-a", &issuer.token("ci-bot").await).await).await;
    assert_eq!(status, 403);
    write_clients(
        &clients,
        &json!({"ci-bot": {"org_name": "Acme Research", "groups": ["ml-platform"]}}),
    );

    // Key rotation: a token signed by a key the gateway has not seen makes
    // it fetch the keys again; the retired key's tokens stop working.
    let old_kid = header_of(&token)["kid"].clone();
    let issuer = issuer.rotate().await;
    let rotated = issuer.token("ci-bot").await;
    assert_ne!(header_of(&rotated)["kid"], old_kid);
    let fetches_before = jwks_fetches(&gw).await;
    let response = chat(&gw, "alpha", "chat-a", &rotated).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let fetches = jwks_fetches(&gw).await;
    assert_eq!(fetches, fetches_before + 1, "one fetch for the new key");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, error) = error_of(chat(&gw, "alpha", "chat-a", &token).await).await;
    assert_eq!(status, 401, "the retired key's token: {error}");
    // Made-up key ids do not make the gateway hammer the provider.
    for _ in 0..20 {
        let _ = chat(&gw, "alpha", "chat-a", &token).await;
    }
    let after = jwks_fetches(&gw).await;
    assert!(
        after <= fetches + 2,
        "{after} fetches after {fetches}: refreshes are rate-bounded"
    );

    // An issuer that does not answer: tokens wait (503), nothing is let by.
    let silent = free_port();
    gw.add_proxy_with_env(
        "strict",
        &[
            ("MAAS_ACCESS_TOKENS_ENABLED", "true"),
            ("MAAS_ACCESS_TOKENS_ISSUER_URL", &format!("http://127.0.0.1:{silent}")),
            ("MAAS_ACCESS_TOKENS_AUDIENCE", AUDIENCE),
        ],
    );
    let response = gw
        .chat(&format!("{}/alpha", gw.proxies[1].base), &rotated, "chat-a")
        .await;
    assert_eq!(response.headers()["retry-after"], "2");
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("service_unavailable")),
        "{error}"
    );

    // The access log names the client; a key caller's line names its key.
    let lines = gw.access_log(0);
    let by_token: Vec<&Value> = lines.iter().filter(|l| l["token_client"] == "ci-bot").collect();
    assert!(by_token.len() >= 3, "{lines:?}");
    assert!(by_token.iter().all(|l| l.get("key").is_none()));
    let text = std::fs::read_to_string(&gw.proxies[0].access_log).unwrap();
    assert!(!text.contains(&token[20..60]), "no token in the access log");
    issuer.stop().await;
}

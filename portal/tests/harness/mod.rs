//! A portal served over HTTP on a real store, and a minimal browser: a
//! cookie jar, no redirects followed, forms posted as a browser posts them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use maas_portal::PortalOptions;
use maas_store::{Environment, Store, StoreLocation, StoreOptions};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::json;

pub struct Portal {
    pub base: String,
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
}

/// A catalog with one served product: an open plan and one that needs approval.
pub async fn seed_catalog(store: &Store) {
    let backend = serde_json::from_value(json!({"system_name": "vllm", "urls": ["http://127.0.0.1:9"]})).unwrap();
    store.put_backend(backend).await.unwrap();
    let product = serde_json::from_value(json!({
        "system_name": "granite", "name": "Granite 8B", "description": "A model for <code> & chat",
        "path_prefix": "/granite", "models": ["granite-8b"], "backend": "vllm"
    }))
    .unwrap();
    store.put_product(product).await.unwrap();
    for plan in [
        json!({"product": "granite", "system_name": "standard", "name": "Standard", "published": true, "default": true,
               "limits": [{"metric": "hits", "period": "minute", "value": 60}]}),
        json!({"product": "granite", "system_name": "premium", "name": "Premium", "published": true, "approval_required": true,
               "max_tokens": 512}),
        json!({"product": "granite", "system_name": "internal", "name": "Internal"}),
    ] {
        store.put_plan(serde_json::from_value(plan).unwrap()).await.unwrap();
    }
    store.promote("granite", Environment::Staging).await.unwrap();
    store.promote("granite", Environment::Production).await.unwrap();
}

impl Portal {
    pub async fn start(store: Store, options: PortalOptions, dir: Option<tempfile::TempDir>) -> Portal {
        let app = maas_portal::router(store.clone(), options).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .await
                .unwrap()
        });
        Portal {
            base: format!("http://{address}"),
            store,
            _dir: dir,
        }
    }

    pub async fn embedded(options: PortalOptions) -> Portal {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Embedded {
            data_dir: dir.path().to_owned(),
        };
        let store = Store::open(&location, StoreOptions::default()).await.unwrap();
        seed_catalog(&store).await;
        Portal::start(store, options, Some(dir)).await
    }

    pub fn browser(&self) -> Browser {
        Browser {
            base: self.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            set_cookie_lines: Vec::new(),
        }
    }
}

/// What a page answered.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The value of hidden input `name` on the page.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no `{name}` field:\n{}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }
}

pub struct Browser {
    pub base: String,
    http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    /// Every `Set-Cookie` line received, newest last.
    pub set_cookie_lines: Vec<String>,
}

pub fn form_encode(fields: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        for line in headers.get_all("set-cookie") {
            let line = line.to_str().unwrap().to_owned();
            let (pair, attributes) = line.split_once(';').unwrap_or((&line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
            self.set_cookie_lines.push(line);
        }
        let body = response.text().await.unwrap();
        Answer { status, headers, body }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(fields))
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    /// Posts the form at `path` with the CSRF token of the page at `page`.
    pub async fn submit(&mut self, page: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
        let csrf = self.get(page).await.hidden("csrf");
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }

    /// Signs up a new organization with one user, then signs in (sign-up
    /// answers the same whether the email existed, so it signs nobody in).
    pub async fn sign_up(&mut self, organization: &str, email: &str) -> Answer {
        let password = "correct horse battery staple";
        let answer = self
            .submit(
                "/sign-up",
                "/sign-up",
                &[
                    ("organization", organization),
                    ("display_name", "Ada"),
                    ("email", email),
                    ("password", password),
                ],
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let next = text(&answer.hidden("next"));
        let answer = self
            .submit(
                "/sign-in",
                "/sign-in",
                &[("email", email), ("password", password), ("next", &next)],
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        answer
    }
}

impl Portal {
    /// Makes the user an admin, as an admin or `maas set-role` would.
    pub async fn make_admin(&self, email: &str) {
        let user = self.store.find_user_by_email(email).await.unwrap().unwrap();
        let update = maas_store::UserUpdate {
            role: Some(maas_store::model::UserRole::Admin),
            ..maas_store::UserUpdate::default()
        };
        self.store.update_user(&user.id, update).await.unwrap();
    }
}

pub fn email(local: &str) -> String {
    [local, "example.com"].join("@")
}

/// Page text with the HTML escapes a browser would undo.
pub fn text(body: &str) -> String {
    body.replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

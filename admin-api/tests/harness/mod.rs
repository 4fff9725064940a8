//! The admin API served over HTTP on a real store (embedded or Redis), for
//! the tests in this directory.

#![allow(dead_code)]

use std::net::SocketAddr;

use maas_admin_api::{AdminTokens, Scope};
use maas_store::{Store, StoreLocation, StoreOptions};
use reqwest::StatusCode;
use serde_json::Value;

pub const ADMIN: &str = "admin-test-token";
pub const READER: &str = "reader-test-token";

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    redis_prefix: Option<String>,
}

impl Api {
    pub async fn start(store: Store, dir: Option<tempfile::TempDir>, redis_prefix: Option<String>) -> Api {
        let mut tokens = AdminTokens::new(Some(ADMIN));
        tokens.add(READER, Scope::Read, "reader");
        let app = maas_admin_api::router(store.clone(), tokens);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .await
                .unwrap()
        });
        Api {
            base: format!("http://{address}/admin/api/v1"),
            http: reqwest::Client::new(),
            store,
            _dir: dir,
            redis_prefix,
        }
    }

    pub async fn embedded() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Embedded {
            data_dir: dir.path().to_owned(),
        };
        let store = Store::open(&location, StoreOptions::default()).await.unwrap();
        Api::start(store, Some(dir), None).await
    }

    pub async fn redis() -> Api {
        let url = std::env::var("MAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!(
            "maastest-admin-{}",
            maas_store::ids::hex(&maas_store::ids::random_bytes::<6>())
        );
        let location = StoreLocation::Redis {
            url,
            prefix: prefix.clone(),
            tls: Default::default(),
        };
        let store = Store::open(&location, StoreOptions::default())
            .await
            .expect("Redis must run on MAAS_TEST_REDIS_URL (default 127.0.0.1:6379): apt install redis-server");
        Api::start(store, None, Some(prefix)).await
    }

    pub async fn both() -> [Api; 2] {
        [Api::embedded().await, Api::redis().await]
    }

    pub fn kind(&self) -> &'static str {
        if self.redis_prefix.is_some() {
            "redis"
        } else {
            "embedded"
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, headers, body)
    }

    /// `method path` as an admin; the answer's text (CSV, Prometheus).
    pub async fn raw(&self, method: &str, path: &str) -> String {
        let response = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{method} {path}: {}", response.status());
        response.text().await.unwrap()
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.send(method, path, Some(ADMIN), &[], body).await
    }
}

/// Removes the test's Redis keys.
impl Drop for Api {
    fn drop(&mut self) {
        let Some(prefix) = self.redis_prefix.clone() else {
            return;
        };
        let url = std::env::var("MAAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let backend = maas_store::backend::redis::RedisBackend::connect(&url, &prefix, &Default::default())
                    .await
                    .unwrap();
                backend.destroy_all_data().await.unwrap();
            });
        })
        .join();
    }
}

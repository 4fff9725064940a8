//! The simulator on a free port, and requests to it.

#![allow(dead_code)]

use maas_sim::{SimConfig, SimModel, TokenRange};
use serde_json::Value;

pub struct Sim {
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub async fn start(config: SimConfig) -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(maas_sim::serve(listener, config, async {
        let _ = stop.await;
    }));
    Sim {
        base,
        client: reqwest::Client::new(),
        shutdown: Some(shutdown),
    }
}

/// One fast model, `m`, with the given tweaks.
pub fn model(edit: impl FnOnce(&mut SimModel)) -> SimConfig {
    let mut model = SimModel {
        ttft_ms: 0,
        itl_ms: 0,
        output_tokens: TokenRange { min: 20, max: 40 },
        ..SimModel::named("m")
    };
    edit(&mut model);
    SimConfig {
        seed: 7,
        models: vec![model],
    }
}

impl Sim {
    pub async fn post(&self, path: &str, app: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("x-maas-application-id", app)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The body of `GET path`, as text.
    pub async fn text(&self, path: &str) -> String {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        response.text().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub async fn usage(&self, app: &str) -> Value {
        self.get_json("/sim/usage").await["applications"][app].clone()
    }

    /// The `data:` payloads of a streamed response, `[DONE]` included.
    pub async fn events(&self, path: &str, body: Value) -> Vec<String> {
        let text = self.post(path, "app", body).await.text().await.unwrap();
        assert!(text.ends_with("\n\n"), "events end with a blank line");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.strip_prefix("data: ")
                    .expect("every event is one data line")
                    .to_owned()
            })
            .collect()
    }
}

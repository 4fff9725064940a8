//! Which product a request is for: by host or path prefix (each product can
//! have its own endpoint, as in the walkthrough), else the shared `/v1`
//! endpoint, where the JSON body's `model` picks the product.

use std::collections::HashMap;

use maas_store::CatalogSnapshot;
use maas_store::model::{Plan, Product};

use crate::request::mapping::MappingRules;

/// A product as the proxy serves it.
#[derive(Debug, Clone)]
pub struct ProductRoute {
    pub product: Product,
    pub rules: MappingRules,
    /// Its plans, for token callers (whose plan comes from their groups).
    pub plans: Vec<Plan>,
}

/// Routes of one catalog revision; rebuilt when the catalog changes.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub revision: u64,
    products: Vec<ProductRoute>,
    by_model: HashMap<String, usize>,
    by_host: HashMap<String, usize>,
    /// Indexes of products with a path prefix, longest prefix first.
    by_prefix: Vec<usize>,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// A product's own endpoint; `api_path` is the path with the prefix removed.
    Product {
        index: usize,
        api_path: &'a str,
    },
    /// The shared `/v1` endpoint: the body's `model` decides.
    Shared {
        api_path: &'a str,
    },
    Unknown,
}

impl RouteTable {
    pub fn build(catalog: &CatalogSnapshot) -> RouteTable {
        let products: Vec<ProductRoute> = catalog
            .products
            .iter()
            .map(|product| ProductRoute {
                rules: MappingRules::compile(product),
                product: product.clone(),
                plans: catalog
                    .plans
                    .iter()
                    .filter(|plan| plan.product == product.system_name)
                    .cloned()
                    .collect(),
            })
            .collect();
        let mut by_model = HashMap::new();
        let mut by_host = HashMap::new();
        let mut by_prefix = Vec::new();
        for (index, route) in products.iter().enumerate() {
            for model in &route.product.models {
                by_model.entry(model.clone()).or_insert(index);
            }
            for host in &route.product.hosts {
                by_host.entry(host.to_ascii_lowercase()).or_insert(index);
            }
            if route
                .product
                .path_prefix
                .as_deref()
                .is_some_and(|p| p != "/" && !p.is_empty())
            {
                by_prefix.push(index);
            }
        }
        by_prefix.sort_by_key(|&i| std::cmp::Reverse(products[i].product.path_prefix.as_ref().map_or(0, String::len)));
        RouteTable {
            revision: catalog.revision,
            products,
            by_model,
            by_host,
            by_prefix,
        }
    }

    pub fn product(&self, index: usize) -> &ProductRoute {
        &self.products[index]
    }

    pub fn products(&self) -> &[ProductRoute] {
        &self.products
    }

    pub fn find_product(&self, system_name: &str) -> Option<usize> {
        self.products.iter().position(|p| p.product.system_name == system_name)
    }

    pub fn product_for_model(&self, model: &str) -> Option<usize> {
        self.by_model.get(model).copied()
    }

    /// `host` is the Host header (a port is ignored); `path` has no query.
    pub fn route<'a>(&self, host: Option<&str>, path: &'a str) -> Route<'a> {
        if let Some(&index) = host.and_then(|host| self.by_host.get(&strip_port(host).to_ascii_lowercase())) {
            let prefix = self.products[index].product.path_prefix.as_deref().unwrap_or("");
            let api_path = strip_prefix(path, prefix).unwrap_or(path);
            return Route::Product { index, api_path };
        }
        for &index in &self.by_prefix {
            let prefix = self.products[index].product.path_prefix.as_deref().unwrap_or("");
            if let Some(api_path) = strip_prefix(path, prefix) {
                return Route::Product { index, api_path };
            }
        }
        if path == "/v1" || path.starts_with("/v1/") {
            return Route::Shared { api_path: path };
        }
        Route::Unknown
    }
}

/// The path sent upstream: the backend's base path joined with the API path.
pub fn upstream_path(backend_path: &str, api_path: &str, query: Option<&str>) -> String {
    let base = backend_path.trim_end_matches('/');
    let mut path = String::with_capacity(base.len() + api_path.len() + query.map_or(0, |q| q.len() + 1));
    path.push_str(base);
    if !api_path.starts_with('/') {
        path.push('/');
    }
    path.push_str(api_path);
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    path
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(v6, _)| v6.trim_start_matches('['));
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// `path` without `prefix`, if it is `prefix` or below it.
fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> CatalogSnapshot {
        let product = |json: &str| -> Product { serde_json::from_str(json).unwrap() };
        CatalogSnapshot {
            revision: 7,
            backends: vec![],
            products: vec![
                product(r#"{"system_name":"tiny","backend":"b","path_prefix":"/tiny","models":["tiny-1b"]}"#),
                product(r#"{"system_name":"tinier","backend":"b","path_prefix":"/tiny/er","models":["tiny-0.5b"]}"#),
                product(
                    r#"{"system_name":"granite","backend":"b","hosts":["granite.example.com"],"models":["granite-8b"]}"#,
                ),
            ],
            plans: vec![],
        }
    }

    #[test]
    fn routes_by_host_then_prefix_then_shared() {
        let table = RouteTable::build(&catalog());
        assert_eq!(
            table.route(Some("Granite.example.com:443"), "/v1/chat/completions"),
            Route::Product {
                index: 2,
                api_path: "/v1/chat/completions"
            }
        );
        assert_eq!(
            table.route(Some("localhost:8080"), "/tiny/v1/models"),
            Route::Product {
                index: 0,
                api_path: "/v1/models"
            }
        );
        assert_eq!(
            table.route(None, "/tiny/er/v1/models"),
            Route::Product {
                index: 1,
                api_path: "/v1/models"
            }
        );
        assert_eq!(
            table.route(None, "/tiny"),
            Route::Product {
                index: 0,
                api_path: "/"
            }
        );
        assert_eq!(table.route(None, "/tinyllama/v1"), Route::Unknown);
        assert_eq!(
            table.route(None, "/v1/embeddings"),
            Route::Shared {
                api_path: "/v1/embeddings"
            }
        );
        assert_eq!(table.route(None, "/v10"), Route::Unknown);
        assert_eq!(table.product_for_model("granite-8b"), Some(2));
        assert_eq!(table.product_for_model("gpt-4"), None);
        assert_eq!(table.revision, 7);
    }

    #[test]
    fn upstream_path_joins_base_and_query() {
        assert_eq!(upstream_path("/", "/v1/models", None), "/v1/models");
        assert_eq!(
            upstream_path("/openai/", "/v1/models", Some("a=1")),
            "/openai/v1/models?a=1"
        );
        assert_eq!(upstream_path("/", "/", None), "/");
        assert_eq!(strip_port("[::1]:8080"), "::1");
    }
}

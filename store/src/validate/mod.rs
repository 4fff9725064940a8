//! Validation of catalog objects, alone and together.
//!
//! Every error names the field it is about as a path (`products[2].backend`),
//! so `maas check` can point at the file line and the admin API at the field.
//! A whole catalog is checked at once: the store validates the catalog a
//! write would produce, never an object in isolation, so references can't
//! dangle whichever order objects are written in.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::model::{
    AuthMethod, Backend, CorsPolicy, CredentialSettings, MappingRule, PathPattern, Plan, Product, TOKEN_METRICS,
};

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted path of the field, e.g. `plans[1].limits[0].value`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, in document order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// How errors name the object they are in: by list index in a file
/// (`products[2]`), by name in a store write (`products[granite]`).
pub trait ObjectLabels {
    fn backend(&self, index: usize, backend: &Backend) -> String;
    fn product(&self, index: usize, product: &Product) -> String;
    fn plan(&self, index: usize, plan: &Plan) -> String;
}

/// Labels of a catalog document: `backends[0]`, `products[1]`, `plans[2]`.
pub struct ByIndex;

impl ObjectLabels for ByIndex {
    fn backend(&self, index: usize, _: &Backend) -> String {
        format!("backends[{index}]")
    }
    fn product(&self, index: usize, _: &Product) -> String {
        format!("products[{index}]")
    }
    fn plan(&self, index: usize, _: &Plan) -> String {
        format!("plans[{index}]")
    }
}

/// Labels of stored objects: `backends[vllm]`, `plans[granite/standard]`.
pub struct ByName;

impl ObjectLabels for ByName {
    fn backend(&self, _: usize, backend: &Backend) -> String {
        format!("backends[{}]", backend.system_name)
    }
    fn product(&self, _: usize, product: &Product) -> String {
        format!("products[{}]", product.system_name)
    }
    fn plan(&self, _: usize, plan: &Plan) -> String {
        format!("plans[{}/{}]", plan.product, plan.system_name)
    }
}

/// Checks a whole catalog: every object, and every reference between them.
pub fn validate_catalog(
    backends: &[Backend],
    products: &[Product],
    plans: &[Plan],
    labels: &dyn ObjectLabels,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();

    let mut backend_names = HashSet::new();
    for (i, backend) in backends.iter().enumerate() {
        let at = labels.backend(i, backend);
        validate_backend(backend, &at, &mut errors);
        if !backend_names.insert(backend.system_name.as_str()) {
            errors.push(
                format!("{at}.system_name"),
                format!("duplicate backend `{}`", backend.system_name),
            );
        }
    }

    let mut product_names = HashMap::new();
    let mut prefixes = HashMap::new();
    let mut hosts = HashMap::new();
    for (i, product) in products.iter().enumerate() {
        let at = labels.product(i, product);
        validate_product(product, &at, &mut errors);
        if product_names.insert(product.system_name.as_str(), product).is_some() {
            errors.push(
                format!("{at}.system_name"),
                format!("duplicate product `{}`", product.system_name),
            );
        }
        if !product.backend.is_empty() && !backend_names.contains(product.backend.as_str()) {
            errors.push(
                format!("{at}.backend"),
                format!("no backend named `{}`", product.backend),
            );
        }
        if let Some(prefix) = &product.path_prefix
            && let Some(other) = prefixes.insert(prefix.as_str(), &product.system_name)
        {
            errors.push(
                format!("{at}.path_prefix"),
                format!("`{prefix}` is already the prefix of product `{other}`"),
            );
        }
        for (h, host) in product.hosts.iter().enumerate() {
            if let Some(other) = hosts.insert(host.to_ascii_lowercase(), &product.system_name) {
                errors.push(
                    format!("{at}.hosts[{h}]"),
                    format!("`{host}` is already a host of product `{other}`"),
                );
            }
        }
    }

    let mut plan_names = HashSet::new();
    let mut defaults: HashMap<&str, &str> = HashMap::new();
    for (i, plan) in plans.iter().enumerate() {
        let at = labels.plan(i, plan);
        let product = product_names.get(plan.product.as_str()).copied();
        validate_plan(plan, product, &at, &mut errors);
        if !plan_names.insert((plan.product.as_str(), plan.system_name.as_str())) {
            errors.push(
                format!("{at}.system_name"),
                format!("duplicate plan `{}` of product `{}`", plan.system_name, plan.product),
            );
        }
        if plan.default
            && let Some(other) = defaults.insert(&plan.product, &plan.system_name)
        {
            errors.push(
                format!("{at}.default"),
                format!("product `{}` already has default plan `{other}`", plan.product),
            );
        }
    }
    for (i, product) in products.iter().enumerate() {
        let at = labels.product(i, product);
        for (r, rule) in product.token_plans.iter().enumerate() {
            if !plan_names.contains(&(product.system_name.as_str(), rule.plan.as_str())) {
                errors.push(
                    format!("{at}.token_plans[{r}].plan"),
                    format!("product `{}` has no plan `{}`", product.system_name, rule.plan),
                );
            }
        }
    }
    errors.into_result()
}

/// `auth` names each method once, and a product taking tokens says which
/// plan they get (a token no rule matches is refused, so none would pass).
fn validate_auth(product: &Product, at: &str, errors: &mut ValidationErrors) {
    if product.auth.is_empty() {
        errors.push(format!("{at}.auth"), "list `api_key`, `oidc` or both");
    }
    for (i, method) in product.auth.iter().enumerate() {
        if product.auth[..i].contains(method) {
            errors.push(format!("{at}.auth[{i}]"), "listed twice");
        }
    }
    let takes_tokens = product.accepts(AuthMethod::Oidc);
    if takes_tokens && product.token_plans.is_empty() {
        errors.push(
            format!("{at}.token_plans"),
            "a product with `oidc` in `auth` needs at least one rule: `{group, plan}`, or `{plan}` for every token",
        );
    }
    if !takes_tokens && !product.token_plans.is_empty() {
        errors.push(
            format!("{at}.token_plans"),
            "only products with `oidc` in `auth` take tokens: add it, or remove these rules",
        );
    }
    for (r, rule) in product.token_plans.iter().enumerate() {
        if rule.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            errors.push(
                format!("{at}.token_plans[{r}].group"),
                "a group name; leave `group` out for a rule every token matches",
            );
        }
    }
}

/// Lowercase letters, digits, `-`, `_`, `.`; 1 to 64 long; letter or digit first.
pub fn is_system_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// A plausible email address: `local@domain.tld`, no spaces, at most 254 long.
pub fn is_email(email: &str) -> bool {
    email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An address or a CIDR block (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`),
/// for settings that name trusted hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: std::net::IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: std::net::IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0-{bits}"))?,
        };
        Ok(IpRange { network, prefix })
    }

    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        let address = match address {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, std::net::IpAddr::V4),
            v4 => v4,
        };
        let (network, address, bits) = match (self.network, address) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(a)), 32)
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        if shift >= bits {
            return true;
        }
        network >> shift == address >> shift
    }
}

const SYSTEM_NAME_RULE: &str =
    "must be 1-64 lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit";

fn check_system_name(name: &str, path: String, errors: &mut ValidationErrors) {
    if !is_system_name(name) {
        errors.push(path, format!("`{name}` {SYSTEM_NAME_RULE}"));
    }
}

/// Longest a request may wait in the gateway's queue: OpenAI's SDKs give up after 10 minutes.
const MAX_QUEUE_MS: u64 = 600_000;

fn validate_backend(backend: &Backend, at: &str, errors: &mut ValidationErrors) {
    check_system_name(&backend.system_name, format!("{at}.system_name"), errors);
    if backend.urls.is_empty() {
        errors.push(format!("{at}.urls"), "a backend needs at least one URL");
    }
    let mut seen = HashSet::new();
    for (i, url) in backend.urls.iter().enumerate() {
        if let Err(reason) = check_base_url(url) {
            errors.push(format!("{at}.urls[{i}]"), reason);
        } else if !seen.insert(url.trim_end_matches('/')) {
            errors.push(format!("{at}.urls[{i}]"), format!("`{url}` is listed twice"));
        }
    }
    if !backend.health_path.starts_with('/') {
        errors.push(format!("{at}.health_path"), "must start with `/`");
    }
    let t = &backend.timeouts;
    for (field, value) in [
        ("connect_ms", t.connect_ms),
        ("read_ms", t.read_ms),
        ("write_ms", t.write_ms),
        ("pool_idle_ms", t.pool_idle_ms),
    ] {
        if value == 0 {
            errors.push(format!("{at}.timeouts.{field}"), "must be greater than 0");
        }
    }
    if let Some(check) = &backend.health_check {
        if check.interval_ms < 100 {
            errors.push(format!("{at}.health_check.interval_ms"), "must be at least 100");
        }
        for (field, value) in [
            ("timeout_ms", check.timeout_ms),
            ("unhealthy_after", u64::from(check.unhealthy_after)),
            ("healthy_after", u64::from(check.healthy_after)),
        ] {
            if value == 0 {
                errors.push(format!("{at}.health_check.{field}"), "must be greater than 0");
            }
        }
    }
    if let Some(saturation) = &backend.saturation {
        let at = format!("{at}.saturation");
        if saturation.waiting == 0 {
            errors.push(format!("{at}.waiting"), "must be at least 1");
        }
        if !(1..=100).contains(&saturation.kv_cache_percent) {
            errors.push(format!("{at}.kv_cache_percent"), "must be from 1 to 100");
        }
        if saturation.in_flight == Some(0) {
            errors.push(format!("{at}.in_flight"), "must be at least 1");
        }
    }
    if let Some(var) = &backend.api_key_env {
        let valid = !var.is_empty()
            && !var.as_bytes()[0].is_ascii_digit()
            && var
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            errors.push(
                format!("{at}.api_key_env"),
                format!("`{var}` is not an environment variable name (A-Z, 0-9, _)"),
            );
        }
    }
}

fn check_base_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}` must not have a query string"));
    }
    Ok(())
}

fn validate_product(product: &Product, at: &str, errors: &mut ValidationErrors) {
    check_system_name(&product.system_name, format!("{at}.system_name"), errors);
    if !(1..=MAX_QUEUE_MS).contains(&product.queue.max_queue_ms) {
        errors.push(
            format!("{at}.queue.max_queue_ms"),
            format!("must be from 1 to {MAX_QUEUE_MS} (10 minutes)"),
        );
    }
    if product.queue.max_waiting == 0 {
        errors.push(format!("{at}.queue.max_waiting"), "must be at least 1");
    }
    if let Some(prefix) = &product.path_prefix {
        let path = format!("{at}.path_prefix");
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            errors.push(
                path,
                format!("`{prefix}` must start with `/`, have a name and no trailing `/`"),
            );
        } else if prefix == "/v1" || prefix.starts_with("/v1/") {
            errors.push(path, format!("`{prefix}` would hide the shared `/v1` endpoint"));
        } else if prefix
            .bytes()
            .any(|b| matches!(b, b'{' | b'}' | b'$' | b'?' | b'#') || b.is_ascii_whitespace())
        {
            errors.push(
                path,
                format!("`{prefix}` may not contain `{{`, `}}`, `$`, `?`, `#` or spaces"),
            );
        }
    }
    for (i, host) in product.hosts.iter().enumerate() {
        if host.parse::<http::uri::Authority>().is_err() || host.contains('@') || host.is_empty() {
            errors.push(format!("{at}.hosts[{i}]"), format!("`{host}` is not a host name"));
        }
    }
    let mut models = HashSet::new();
    for (i, model) in product.models.iter().enumerate() {
        if model.is_empty() || model.chars().any(char::is_whitespace) {
            errors.push(format!("{at}.models[{i}]"), "a model id is non-empty and has no spaces");
        } else if !models.insert(model) {
            errors.push(format!("{at}.models[{i}]"), format!("model `{model}` is listed twice"));
        }
    }
    for (model, settings) in &product.model_settings {
        if !models.contains(model) {
            errors.push(
                format!("{at}.model_settings.{model}"),
                format!("`{model}` is not one of the product's models"),
            );
        }
        for (field, value) in [
            ("image_tokens", settings.image_tokens),
            ("audio_tokens", settings.audio_tokens),
            ("video_tokens", settings.video_tokens),
        ] {
            if value == 0 {
                errors.push(format!("{at}.model_settings.{model}.{field}"), "must be at least 1");
            }
        }
        if settings.tokenizer.as_deref().is_some_and(|path| path.trim().is_empty()) {
            errors.push(
                format!("{at}.model_settings.{model}.tokenizer"),
                "a path to a tokenizer.json",
            );
        }
    }
    if product.backend.is_empty() {
        errors.push(format!("{at}.backend"), "a product needs a backend");
    }
    if !product.backend_path.starts_with('/') {
        errors.push(format!("{at}.backend_path"), "must start with `/`");
    }
    validate_credentials(&product.credentials, &format!("{at}.credentials"), errors);
    validate_auth(product, at, errors);
    if let Some(cors) = &product.cors {
        validate_cors(cors, &format!("{at}.cors"), errors);
    }
    validate_metrics(product, at, errors);
    for (i, rule) in product.mapping_rules.iter().enumerate() {
        validate_rule(rule, product, &format!("{at}.mapping_rules[{i}]"), errors);
    }
    if let Some(doc) = &product.openapi
        && !doc.is_object()
    {
        errors.push(format!("{at}.openapi"), "must be an OpenAPI document (a mapping)");
    }
}

fn validate_credentials(creds: &CredentialSettings, at: &str, errors: &mut ValidationErrors) {
    if creds.locations.is_empty() {
        errors.push(format!("{at}.locations"), "at least one credential location is needed");
    }
    let mut seen = HashSet::new();
    for (i, location) in creds.locations.iter().enumerate() {
        if !seen.insert(location) {
            errors.push(format!("{at}.locations[{i}]"), "listed twice");
        }
    }
    if http::HeaderName::from_bytes(creds.header_name.as_bytes()).is_err() {
        errors.push(
            format!("{at}.header_name"),
            format!("`{}` is not a header name", creds.header_name),
        );
    }
    let param_ok = !creds.query_param.is_empty()
        && creds
            .query_param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !param_ok {
        errors.push(
            format!("{at}.query_param"),
            format!("`{}` is not a query parameter name", creds.query_param),
        );
    }
}

fn validate_cors(cors: &CorsPolicy, at: &str, errors: &mut ValidationErrors) {
    if cors.allow_origins.is_empty() {
        errors.push(format!("{at}.allow_origins"), "list `*` or at least one origin");
    }
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        if origin != "*" && check_base_url(origin).is_err() {
            errors.push(
                format!("{at}.allow_origins[{i}]"),
                format!("`{origin}` is not `*` or an http(s) origin"),
            );
        }
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            errors.push(
                format!("{at}.allow_methods[{i}]"),
                format!("`{method}` is not an HTTP method"),
            );
        }
    }
    for (field, list) in [
        ("allow_headers", &cors.allow_headers),
        ("expose_headers", &cors.expose_headers),
    ] {
        for (i, header) in list.iter().enumerate() {
            // `X-Team-*` allows a family of request headers.
            let name = match field {
                "allow_headers" => header.strip_suffix('*').unwrap_or(header),
                _ => header,
            };
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(format!("{at}.{field}[{i}]"), format!("`{header}` is not a header name"));
            }
        }
    }
}

fn validate_metrics(product: &Product, at: &str, errors: &mut ValidationErrors) {
    let mut names = HashSet::new();
    for (i, metric) in product.metrics.iter().enumerate() {
        check_system_name(&metric.system_name, format!("{at}.metrics[{i}].system_name"), errors);
        if metric.system_name == crate::model::SPEND {
            errors.push(
                format!("{at}.metrics[{i}].system_name"),
                "`spend` is reserved: the gateway counts each application's spend under it",
            );
        } else if !names.insert(metric.system_name.as_str()) {
            errors.push(
                format!("{at}.metrics[{i}].system_name"),
                format!("`{}` is declared twice", metric.system_name),
            );
        }
    }
    for (i, method) in product.methods.iter().enumerate() {
        let path = format!("{at}.methods[{i}].system_name");
        check_system_name(&method.system_name, path.clone(), errors);
        if crate::model::BUILTIN_METRICS.contains(&method.system_name.as_str())
            || method.system_name == crate::model::SPEND
        {
            errors.push(path, format!("`{}` is a metric, not a method", method.system_name));
        } else if !names.insert(method.system_name.as_str()) {
            errors.push(path, format!("`{}` is declared twice", method.system_name));
        }
    }
}

fn validate_rule(rule: &MappingRule, product: &Product, at: &str, errors: &mut ValidationErrors) {
    if let Err(reason) = PathPattern::parse(&rule.pattern) {
        errors.push(format!("{at}.pattern"), reason);
    }
    if TOKEN_METRICS.contains(&rule.metric.as_str()) {
        errors.push(
            format!("{at}.metric"),
            format!(
                "`{}` is counted from responses, a mapping rule cannot increment it",
                rule.metric
            ),
        );
    } else if !product.knows_metric(&rule.metric) {
        errors.push(
            format!("{at}.metric"),
            format!(
                "no method or metric `{}` in product `{}`",
                rule.metric, product.system_name
            ),
        );
    }
    if rule.increment == 0 {
        errors.push(format!("{at}.increment"), "must be at least 1");
    }
}

fn validate_plan(plan: &Plan, product: Option<&Product>, at: &str, errors: &mut ValidationErrors) {
    check_system_name(&plan.system_name, format!("{at}.system_name"), errors);
    if product.is_none() {
        errors.push(format!("{at}.product"), format!("no product named `{}`", plan.product));
    }
    let mut seen = HashSet::new();
    for (i, limit) in plan.limits.iter().enumerate() {
        let path = format!("{at}.limits[{i}]");
        if let Some(product) = product
            && !product.knows_metric(&limit.metric)
        {
            errors.push(
                format!("{path}.metric"),
                format!(
                    "no method or metric `{}` in product `{}`",
                    limit.metric, product.system_name
                ),
            );
        }
        if limit.value == 0 {
            errors.push(
                format!("{path}.value"),
                "must be at least 1 (remove the limit, or suspend the application)",
            );
        }
        if !seen.insert((limit.metric.as_str(), limit.period)) {
            errors.push(
                format!("{path}.period"),
                format!("`{}` already has a {} limit", limit.metric, limit.period),
            );
        }
    }
    if plan.max_tokens == Some(0) {
        errors.push(format!("{at}.max_tokens"), "must be at least 1");
    }
    if plan.max_concurrent_requests == Some(0) {
        errors.push(format!("{at}.max_concurrent_requests"), "must be at least 1");
    }
    if plan.currency.len() != 3 || !plan.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.push(
            format!("{at}.currency"),
            format!("`{}` is not a 3-letter currency code", plan.currency),
        );
    }
    if let Some(product) = product {
        for model in plan.model_prices.keys() {
            if !product.models.is_empty() && !product.models.iter().any(|m| m == model) {
                errors.push(
                    format!("{at}.model_prices.{model}"),
                    format!("no model `{model}` in product `{}`", product.system_name),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! Mapping rules with 3scale's semantics: every rule whose HTTP method and
//! path pattern match adds its increment to its metric or method, in
//! order, until a rule marked `last` matches. `hits` is the parent of
//! every method, so a method's increment also counts as hits.

use maas_store::model::{HITS, HttpMethod, MappingRule, PathPattern, Product};

#[derive(Debug, Clone)]
struct CompiledRule {
    method: HttpMethod,
    pattern: PathPattern,
    metric: String,
    increment: u64,
    last: bool,
    is_method: bool,
    unmetered: bool,
}

/// A product's rules, parsed once per catalog revision.
#[derive(Debug, Clone, Default)]
pub struct MappingRules {
    rules: Vec<CompiledRule>,
}

/// What one request counts: `(metric, increment)`, one entry per metric.
pub type Deltas = Vec<(String, u64)>;

impl MappingRules {
    /// Rules whose pattern does not parse are skipped (catalog validation
    /// refuses them before they reach a proxy).
    pub fn compile(product: &Product) -> MappingRules {
        let methods = product.effective_methods();
        let rules = product
            .effective_mapping_rules()
            .iter()
            .filter_map(|rule: &MappingRule| {
                let pattern = PathPattern::parse(&rule.pattern).ok()?;
                Some(CompiledRule {
                    method: rule.http_method,
                    pattern,
                    metric: rule.metric.clone(),
                    increment: rule.increment,
                    last: rule.last,
                    is_method: methods.iter().any(|m| m.system_name == rule.metric),
                    unmetered: rule.unmetered,
                })
            })
            .collect();
        MappingRules { rules }
    }

    /// The deltas of a request, or `None` when no rule matches (404).
    pub fn deltas(&self, method: &str, path: &str) -> Option<Deltas> {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let mut deltas: Deltas = Vec::with_capacity(2);
        let mut add = |metric: &str, by: u64| match deltas.iter_mut().find(|(m, _)| m == metric) {
            Some((_, value)) => *value = value.saturating_add(by),
            None => deltas.push((metric.to_owned(), by)),
        };
        let mut matched = false;
        for rule in &self.rules {
            if !method_matches(rule.method, method) || !rule.pattern.matches(path) {
                continue;
            }
            matched = true;
            add(&rule.metric, rule.increment);
            if rule.is_method {
                add(HITS, rule.increment);
            }
            if rule.last {
                break;
            }
        }
        matched.then_some(deltas)
    }

    /// Whether some rule takes `method` on `path`: [`deltas`](Self::deltas)
    /// is `Some`, without counting anything.
    pub fn takes(&self, method: &str, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        self.rules
            .iter()
            .any(|rule| method_matches(rule.method, method) && rule.pattern.matches(path))
    }

    /// Whether a rule that matches `method` `path` (up to the first
    /// matching `last`) lets it reach the model server unmetered.
    pub fn allows_unmetered(&self, method: &str, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        for rule in &self.rules {
            if !method_matches(rule.method, method) || !rule.pattern.matches(path) {
                continue;
            }
            if rule.unmetered {
                return true;
            }
            if rule.last {
                break;
            }
        }
        false
    }

    /// The methods some rule takes on `path`, for a 405's `Allow`; empty
    /// when no rule knows the path at all (a 404), or one takes any method.
    pub fn methods_for(&self, path: &str) -> Vec<&'static str> {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let mut methods = Vec::new();
        for rule in self.rules.iter().filter(|r| r.pattern.matches(path)) {
            let Some(name) = method_name(rule.method) else {
                return Vec::new();
            };
            if !methods.contains(&name) {
                methods.push(name);
            }
        }
        methods
    }
}

/// What `maas check` says of a product's rules that reach past metering:
/// those that let requests through unmetered, and those that match paths
/// the gateway cannot meter, where requests with a body are refused.
pub fn unmetered_notes(product: &Product) -> Vec<String> {
    let mut notes = Vec::new();
    for (index, rule) in product.effective_mapping_rules().iter().enumerate() {
        let method = method_name(rule.http_method).unwrap_or("ANY");
        let what = format!(
            "product `{}` mapping_rules[{index}] ({method} {})",
            product.system_name, rule.pattern
        );
        let takes_bodies = !matches!(
            rule.http_method,
            HttpMethod::Get | HttpMethod::Head | HttpMethod::Options
        );
        let metered = crate::request::rewrite::Endpoint::of_path(rule.pattern.trim_end_matches('$')).is_inference();
        if rule.unmetered {
            notes.push(format!(
                "{what}: `unmetered: true`, requests it matches on paths other than the OpenAI inference \
                 endpoints reach the model server with no cap, hold or usage"
            ));
        } else if takes_bodies && !metered {
            notes.push(format!(
                "{what} matches paths the gateway cannot meter: requests with a body there are refused \
                 (404 unmetered_endpoint) unless a rule says `unmetered: true`"
            ));
        }
    }
    notes
}

fn method_name(method: HttpMethod) -> Option<&'static str> {
    Some(match method {
        HttpMethod::Any => return None,
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Head => "HEAD",
        HttpMethod::Options => "OPTIONS",
    })
}

fn method_matches(rule: HttpMethod, method: &str) -> bool {
    method_name(rule).is_none_or(|name| name.eq_ignore_ascii_case(method))
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_store::model::{Method, Metric};

    fn product(json: &str) -> Product {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn openai_defaults_count_the_method_and_hits() {
        let rules = MappingRules::compile(&product(r#"{"system_name":"p","backend":"b"}"#));
        let deltas = rules.deltas("POST", "/v1/chat/completions?x=1").unwrap();
        assert_eq!(deltas, vec![("v1-chat-completions".into(), 1), ("hits".into(), 1)]);
        assert_eq!(rules.deltas("GET", "/v1/chat/completions"), None);
        assert_eq!(rules.deltas("POST", "/v2/other"), None);
        assert!(rules.deltas("get", "/v1/models").is_some());
        assert_eq!(rules.methods_for("/v1/chat/completions"), ["POST"]);
        assert_eq!(rules.methods_for("/v1/models/granite"), ["GET"]);
        assert!(rules.methods_for("/v2/other").is_empty(), "unknown paths are 404s");
        for (method, path) in [
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/chat/completions"),
            ("GET", "/v1/models/x"),
            ("POST", "/v2/other"),
        ] {
            assert_eq!(
                rules.takes(method, path),
                rules.deltas(method, path).is_some(),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn rules_accumulate_until_last() {
        let mut p = product(r#"{"system_name":"p","backend":"b"}"#);
        p.metrics.push(Metric {
            system_name: "images".into(),
            friendly_name: String::new(),
            unit: "hit".into(),
            description: String::new(),
        });
        p.methods.push(Method {
            system_name: "chat".into(),
            friendly_name: String::new(),
            description: String::new(),
        });
        let rule = |method, pattern: &str, metric: &str, increment, last| MappingRule {
            http_method: method,
            pattern: pattern.into(),
            metric: metric.into(),
            increment,
            last,
            unmetered: false,
        };
        p.mapping_rules = vec![
            rule(HttpMethod::Post, "/v1/chat", "chat", 2, false),
            rule(HttpMethod::Any, "/v1/", "hits", 1, false),
            rule(HttpMethod::Post, "/v1/chat/completions$", "images", 5, true),
            rule(HttpMethod::Any, "/", "hits", 100, false),
        ];
        let rules = MappingRules::compile(&p);
        let deltas = rules.deltas("POST", "/v1/chat/completions").unwrap();
        assert_eq!(
            deltas,
            vec![("chat".into(), 2), ("hits".into(), 3), ("images".into(), 5)]
        );
        // `$` anchors: a longer path skips the `last` rule and reaches the catch-all.
        let deltas = rules.deltas("POST", "/v1/chat/completions/x").unwrap();
        assert_eq!(deltas, vec![("chat".into(), 2), ("hits".into(), 103)]);
        assert_eq!(rules.deltas("GET", "/other").unwrap(), vec![("hits".into(), 100)]);
        assert!(!rules.allows_unmetered("POST", "/tokenize"));
        p.mapping_rules.insert(
            0,
            MappingRule {
                unmetered: true,
                ..rule(HttpMethod::Post, "/tokenize$", "hits", 1, false)
            },
        );
        let rules = MappingRules::compile(&p);
        assert!(rules.allows_unmetered("POST", "/tokenize"));
        assert!(!rules.allows_unmetered("GET", "/tokenize"));
        assert!(!rules.allows_unmetered("POST", "/tokenize/x"));
        let notes = unmetered_notes(&p);
        assert_eq!(notes.len(), 4, "{notes:#?}");
        assert!(
            notes[0].contains("mapping_rules[0] (POST /tokenize$): `unmetered: true`"),
            "{notes:#?}"
        );
        assert!(
            notes[1].contains("(POST /v1/chat) matches paths the gateway cannot meter"),
            "{notes:#?}"
        );
        assert!(
            notes.iter().all(|n| !n.contains("/v1/chat/completions$")),
            "metered: {notes:#?}"
        );
        assert!(unmetered_notes(&product(r#"{"system_name":"p","backend":"b"}"#)).is_empty());
    }
}

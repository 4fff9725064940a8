//! What `store.redis_url` names: one server, a master that Redis Sentinel
//! watches, or a Redis Cluster. Pure parsing, shared by the configuration
//! check (which reports the field) and the backend (which connects).
//!
//! - `redis://`, `rediss://`, `unix://`: one server, as the redis crate reads it.
//! - `redis+sentinel://[user:password@]host[:port][,host[:port]…]/<master name>[/<db>][?sentinel_username=…&sentinel_password=…]`:
//!   the sentinels (port 26379 unless given) are asked for the master's
//!   address; the user and password authenticate to the master, the
//!   `sentinel_*` parameters to the sentinels. `rediss+sentinel://` speaks
//!   TLS to both.
//! - `redis+cluster://[user:password@]host[:port][,host[:port]…]`: seed
//!   nodes of a cluster (port 6379 unless given); `rediss+cluster://` for TLS.

/// A parsed `store.redis_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server; the URL as given.
    Server(String),
    Sentinel(SentinelTarget),
    Cluster(ClusterTarget),
}

#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    pub tls: bool,
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
}

// Passwords never reach a log line through `{:?}`.
impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("tls", &self.tls)
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &self.sentinel_password.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    pub tls: bool,
    /// One `redis://` (or `rediss://`) URL per seed node, credentials included.
    pub nodes: Vec<String>,
}

impl std::fmt::Debug for ClusterTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| redact(n)).collect();
        f.debug_struct("ClusterTarget")
            .field("tls", &self.tls)
            .field("nodes", &nodes)
            .finish()
    }
}

const SENTINEL_PORT: u16 = 26379;
const REDIS_PORT: u16 = 6379;

/// Reads `url`; the error says what is wrong with it (never the password).
pub fn parse(url: &str) -> Result<RedisTarget, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://".into());
    };
    match scheme {
        "redis" | "rediss" | "unix" => Ok(RedisTarget::Server(url.to_owned())),
        "redis+sentinel" | "rediss+sentinel" => parse_sentinel(scheme == "rediss+sentinel", rest),
        "redis+cluster" | "rediss+cluster" => parse_cluster(scheme == "rediss+cluster", rest),
        other => Err(format!(
            "unknown scheme `{other}`: use redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        )),
    }
}

/// Whether `url` speaks TLS (so the TLS file settings apply to it).
pub fn is_tls(url: &str) -> bool {
    ["rediss://", "rediss+sentinel://", "rediss+cluster://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
}

/// The URL with its passwords replaced by `***`, for logs and errors. The
/// query is set apart first, so an `@` in a parameter is not taken for the
/// end of the credentials.
pub fn redact(url: &str) -> String {
    let (address, query) = match url.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (url, None),
    };
    let mut out = match (address.find("://"), address.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &address[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &address[..scheme + 3], &address[at..]),
                None => address.to_owned(),
            }
        }
        _ => address.to_owned(),
    };
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("sentinel_password", _)) => "sentinel_password=***".to_owned(),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&parameters.join("&"));
    }
    out
}

/// `user:password@rest` → (user, password, rest), percent-decoded.
fn split_credentials(rest: &str) -> Result<(Option<String>, Option<String>, &str), String> {
    let Some((credentials, after)) = rest.rsplit_once('@') else {
        return Ok((None, None, rest));
    };
    let (user, password) = match credentials.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (credentials, None),
    };
    let user = Some(decode(user)?).filter(|u| !u.is_empty());
    let password = password.map(decode).transpose()?;
    Ok((user, password, after))
}

fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a `%` in the URL is not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's credentials are not UTF-8 once decoded".to_owned())
}

/// `h1:p1,h2,[::1]:p3` → hosts and ports.
fn parse_hosts(list: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let mut hosts = Vec::new();
    for entry in list.split(',') {
        let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("`{entry}`: an IPv6 address needs its closing `]`"))?;
            (host, after.strip_prefix(':'))
        } else {
            match entry.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{list}` has an empty host"));
        }
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{entry}`: the port is not a number from 1 to 65535"))?,
        };
        hosts.push((host.to_owned(), port));
    }
    Ok(hosts)
}

fn parse_sentinel(tls: bool, rest: &str) -> Result<RedisTarget, String> {
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (username, password, rest) = split_credentials(rest)?;
    let (hosts, path) = rest
        .split_once('/')
        .ok_or("a sentinel URL names the master after the hosts: redis+sentinel://host:26379/<master name>")?;
    let sentinels = parse_hosts(hosts, SENTINEL_PORT)?;
    let mut path = path.split('/');
    let master = decode(path.next().unwrap_or_default())?;
    if master.is_empty() {
        return Err(
            "a sentinel URL names the master after the hosts: redis+sentinel://host:26379/<master name>".into(),
        );
    }
    let db = match path.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| format!("`{db}` is not a database number"))?,
    };
    if path.next().is_some_and(|p| !p.is_empty()) {
        return Err("a sentinel URL's path is /<master name>[/<db>]".into());
    }
    let mut target = SentinelTarget {
        tls,
        sentinels,
        master,
        db,
        username,
        password,
        sentinel_username: None,
        sentinel_password: None,
    };
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "sentinel_username" => target.sentinel_username = Some(decode(value)?),
            "sentinel_password" => target.sentinel_password = Some(decode(value)?),
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (a sentinel URL takes sentinel_username and sentinel_password)"
                ));
            }
        }
    }
    Ok(RedisTarget::Sentinel(target))
}

fn parse_cluster(tls: bool, rest: &str) -> Result<RedisTarget, String> {
    if rest.contains('?') {
        return Err("a cluster URL takes no parameters".into());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, rest),
    };
    // Checks the credentials decode; the nodes' URLs keep them encoded.
    if let Some(credentials) = credentials {
        split_credentials(&format!("{credentials}@"))?;
    }
    if hosts.contains('/') {
        return Err("a cluster URL has no path (a cluster has only database 0)".into());
    }
    let scheme = if tls { "rediss" } else { "redis" };
    let nodes = parse_hosts(hosts, REDIS_PORT)?
        .into_iter()
        .map(|(host, port)| {
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            match credentials {
                Some(credentials) => format!("{scheme}://{credentials}@{host}:{port}"),
                None => format!("{scheme}://{host}:{port}"),
            }
        })
        .collect();
    Ok(RedisTarget::Cluster(ClusterTarget { tls, nodes }))
}

/// The cluster slot of a key, as Redis computes it (for tests that prove
/// the layout keeps atomic writes in one slot).
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> SentinelTarget {
        match parse(url) {
            Ok(RedisTarget::Sentinel(target)) => target,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn one_server_urls_pass_through() {
        for url in [
            "redis://127.0.0.1:6379/2",
            "rediss://u:p@host",
            "unix:///run/redis.sock",
        ] {
            assert_eq!(parse(url), Ok(RedisTarget::Server(url.into())));
        }
    }

    #[test]
    fn sentinel_urls() {
        let target = sentinel("redis+sentinel://app:s%40cret@10.0.0.1,10.0.0.2:26380,[::1]:5/mymaster/3");
        assert_eq!(
            target.sentinels,
            vec![
                ("10.0.0.1".into(), 26379),
                ("10.0.0.2".into(), 26380),
                ("::1".into(), 5)
            ]
        );
        assert_eq!((target.master.as_str(), target.db), ("mymaster", 3));
        assert_eq!(target.username.as_deref(), Some("app"));
        assert_eq!(target.password.as_deref(), Some("s@cret"));
        assert!(!target.tls);
        assert!(!format!("{target:?}").contains("s@cret"));

        let target = sentinel("rediss+sentinel://:pw@h/m?sentinel_password=x%26y&sentinel_username=watch");
        assert!(target.tls);
        assert_eq!((target.username, target.password.as_deref()), (None, Some("pw")));
        assert_eq!(target.sentinel_password.as_deref(), Some("x&y"));
        assert_eq!(target.sentinel_username.as_deref(), Some("watch"));
        assert_eq!(sentinel("redis+sentinel://h/m/").db, 0);
    }

    #[test]
    fn cluster_urls() {
        let RedisTarget::Cluster(target) = parse("redis+cluster://u:p%40w@a:7000,b,[::1]:7002/").unwrap() else {
            panic!()
        };
        assert_eq!(
            target.nodes,
            [
                "redis://u:p%40w@a:7000",
                "redis://u:p%40w@b:6379",
                "redis://u:p%40w@[::1]:7002"
            ]
        );
        assert!(!format!("{target:?}").contains("p%40w"));
        let RedisTarget::Cluster(target) = parse("rediss+cluster://a:1").unwrap() else {
            panic!()
        };
        assert_eq!((target.tls, target.nodes), (true, vec!["rediss://a:1".to_owned()]));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("localhost:6379", "must start with"),
            ("http://x", "unknown scheme `http`"),
            ("redis+sentinel://h1,h2", "names the master"),
            ("redis+sentinel://h1/", "names the master"),
            ("redis+sentinel://h1:0/m", "port"),
            ("redis+sentinel://h1:x/m", "port"),
            ("redis+sentinel://,h/m", "empty host"),
            ("redis+sentinel://h/m/x", "database number"),
            ("redis+sentinel://h/m/1/2", "path"),
            ("redis+sentinel://h/m?password=x", "unknown parameter `password`"),
            ("redis+sentinel://u:%zz@h/m", "hex"),
            ("redis+sentinel://[::1/m", "closing"),
            ("redis+cluster://a:1/0", "no path"),
            ("redis+cluster://a:1?x=1", "no parameters"),
            ("redis+cluster://a:1,", "empty host"),
        ];
        for (url, expected) in cases {
            let error = parse(url).expect_err(url);
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn redaction_hides_every_password() {
        assert_eq!(redact("redis://u:secret@h"), "redis://u:***@h");
        assert_eq!(
            redact("redis+sentinel://:pw@h/m?sentinel_password=pw2&sentinel_username=u"),
            "redis+sentinel://:***@h/m?sentinel_password=***&sentinel_username=u"
        );
        assert_eq!(redact("redis+cluster://a,b"), "redis+cluster://a,b");
        // An `@` in the query is not where the credentials end; a password
        // given twice is hidden twice.
        assert_eq!(
            redact("redis+sentinel://:p@w@h/m?sentinel_password=a@b&sentinel_password=c"),
            "redis+sentinel://:***@h/m?sentinel_password=***&sentinel_password=***"
        );
        assert_eq!(
            redact("redis+sentinel://h/m?sentinel_password=x@y"),
            "redis+sentinel://h/m?sentinel_password=***"
        );
        assert!(is_tls("rediss+cluster://a") && is_tls("rediss+sentinel://a/m") && !is_tls("redis://a"));
    }

    #[test]
    fn hash_tags_follow_redis_rules() {
        assert_eq!(hash_tag("maas:{r}:product:x"), "r");
        assert_eq!(hash_tag("maas:u:{app_1}:hits:m:60"), "app_1");
        assert_eq!(hash_tag("maas:{}:x"), "maas:{}:x");
        assert_eq!(hash_tag("plain"), "plain");
    }
}

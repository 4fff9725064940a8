//! What the test binaries that start `maas` processes share: free ports,
//! reading one Prometheus sample, TLS certificates, one HTTP/1.1 request
//! read by a hand-made model server, and the npm packages of tests/node.

pub mod certs;

pub use maas_store::conformance::servers::free_port;

/// One HTTP/1.1 request from `reader`: its head, lowercased, and its body
/// (by `Content-Length`); `None` when the connection ended first.
pub fn read_request(reader: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let (mut head, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        let line = line.to_ascii_lowercase();
        if let Some(value) = line.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// The tests/node directory, failing with how to install them when one of
/// `packages` is not there.
pub fn node_dir(packages: &[&str]) -> &'static str {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");
    for package in packages {
        assert!(
            std::path::Path::new(dir)
                .join("node_modules")
                .join(package)
                .join("package.json")
                .exists(),
            "this test needs the npm package `{package}`: `npm ci --prefix tests/node` (.ci/run does it)"
        );
    }
    dir
}

/// The value of metric `name` on the line labelled with `label="value"`.
pub fn metric_value(text: &str, name: &str, label: &str, value: &str) -> Option<u64> {
    // Summed over the series that match (one per model, say).
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| line.contains(&format!("{label}=\"{value}\"")))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(_, number)| number.parse::<u64>().unwrap())
        .reduce(|a, b| a + b)
}

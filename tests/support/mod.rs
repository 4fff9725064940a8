//! What the test binaries that start `maas` processes share: free ports,
//! reading one Prometheus sample, and TLS certificates.

pub mod certs;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

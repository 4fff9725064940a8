//! Prints the admin API's OpenAPI 3.1 document: `cargo run -p maas-admin-api --example openapi > openapi.json`.

fn main() {
    let doc = maas_admin_api::openapi();
    match doc.to_pretty_json() {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("the document does not serialize: {e}");
            std::process::exit(1);
        }
    }
}

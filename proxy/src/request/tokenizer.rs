//! Models' own tokenizers (`model_settings.<model>.tokenizer`, a Hugging
//! Face `tokenizer.json`): loaded when a catalog is, kept across catalog
//! revisions while the file is unchanged, and used only when a prompt's
//! cheap bound does not fit what a budget has left ([`crate::request::prompt`]).
//! A file that cannot be read is logged and its model's prompts keep the
//! bound: a tokenizer narrows holds, it never widens them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use maas_store::model::Product;
use tokenizers::Tokenizer;

use crate::limits::spend::Ask;
use crate::record::metrics::METRICS;
use crate::request::prompt::{TextCount, prompt_tally};
use crate::state::ServingCatalog;

/// A model's tokenizer, counting a prompt's text exactly.
#[derive(Debug)]
pub struct ModelTokenizer(pub Tokenizer);

impl TextCount for ModelTokenizer {
    fn count(&self, text: &str) -> u64 {
        // A text the tokenizer cannot encode keeps its bound.
        self.0
            .encode_fast(text, false)
            .map_or(text.len() as u64, |encoding| encoding.len() as u64)
    }
}

/// Loaded tokenizers by path, with the modification time they were read at.
type Loaded = HashMap<String, (Option<SystemTime>, Arc<ModelTokenizer>)>;

static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

/// The tokenizer of every model of `products` that names one, by path;
/// files already read and unchanged since are not read again.
pub async fn load_for(products: &[Product]) -> HashMap<String, Arc<ModelTokenizer>> {
    let mut wanted: Vec<(String, String, String)> = Vec::new();
    for product in products {
        for (model, settings) in &product.model_settings {
            if let Some(path) = &settings.tokenizer {
                wanted.push((product.system_name.clone(), model.clone(), path.clone()));
            }
        }
    }
    if wanted.is_empty() {
        return HashMap::new();
    }
    // Reading a tokenizer.json of a real model takes a while: off the runtime.
    tokio::task::spawn_blocking(move || load_blocking(&wanted))
        .await
        .unwrap_or_default()
}

fn load_blocking(wanted: &[(String, String, String)]) -> HashMap<String, Arc<ModelTokenizer>> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let cache = loaded.get_or_insert_with(HashMap::new);
    let mut found = HashMap::new();
    for (product, model, path) in wanted {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let Some((at, tokenizer)) = cache.get(path)
            && *at == modified
        {
            found.insert(path.clone(), tokenizer.clone());
            continue;
        }
        match Tokenizer::from_file(path) {
            Ok(tokenizer) => {
                let tokenizer = Arc::new(ModelTokenizer(tokenizer));
                cache.insert(path.clone(), (modified, tokenizer.clone()));
                found.insert(path.clone(), tokenizer);
            }
            Err(error) => tracing::error!(
                product,
                model,
                path,
                %error,
                "the model's tokenizer cannot be read: its prompts are held at their bound"
            ),
        }
    }
    found
}

/// Prompts tokenized at once: a core each. Tokenizing a 256 KiB prompt
/// takes tens of milliseconds, so it runs off the runtime, and a client
/// near its budget's end cannot keep every core busy with it.
static TOKENIZING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, usize::from))
});

/// `ask` with its prompt (in `body`) counted by its model's tokenizer, when
/// it has one, a core is free for it, and that count is below the bound.
pub async fn count_prompt<'a>(
    catalog: &ServingCatalog,
    ask: &Ask<'a>,
    body: Option<bytes::Bytes>,
    product: &str,
) -> Option<Ask<'a>> {
    let tokenizer = catalog.tokenizers.get(ask.model.tokenizer.as_deref()?)?.clone();
    let body = body?;
    let Ok(_permit) = TOKENIZING.try_acquire() else {
        METRICS.prompts_tokenized.with_label_values(&[product, "busy"]).inc();
        return None;
    };
    METRICS.prompts_tokenized.with_label_values(&[product, "counted"]).inc();
    let counted = tokio::task::spawn_blocking(move || prompt_tally(&body, tokenizer.as_ref())).await;
    ask.with_prompt(counted.ok()??)
}

//! The simulator's tokenizer rule and its deterministic text.
//!
//! **Tokenizer rule**: a text has one token per whitespace-separated word,
//! or, for a model configured with a `tokenizer` (a Hugging Face
//! `tokenizer.json`), as many as that tokenizer makes of it
//! ([`TextCounter`]).
//! A chat prompt costs the tokens of every message's text plus 3 per
//! message (role and separators) plus 3 (the assistant header), the
//! approximation OpenAI documents for its chat format. A prompt given as
//! token ids costs one token per id. Generated text is made of tokens that
//! are each one word with a leading space, so counting the words of the
//! output gives back the completion tokens.

/// How a model counts the tokens of a text.
#[derive(Clone, Default)]
pub enum TextCounter {
    /// One token per whitespace-separated word.
    #[default]
    Words,
    /// The model's own tokenizer.
    Tokenizer(std::sync::Arc<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for TextCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextCounter::Words => "Words",
            TextCounter::Tokenizer(_) => "Tokenizer",
        })
    }
}

impl TextCounter {
    /// Reads a `tokenizer.json`.
    pub fn load(path: &str) -> Result<TextCounter, String> {
        let tokenizer = tokenizers::Tokenizer::from_file(path).map_err(|e| format!("{path}: {e}"))?;
        Ok(TextCounter::Tokenizer(std::sync::Arc::new(tokenizer)))
    }

    pub fn count(&self, text: &str) -> u32 {
        match self {
            TextCounter::Words => count_words(text),
            TextCounter::Tokenizer(tokenizer) => tokenizer
                .encode_fast(text, false)
                .map_or_else(|_| text.len() as u32, |encoding| encoding.len() as u32),
        }
    }

    /// Prompt tokens of chat messages given as their texts.
    pub fn chat<'a>(&self, messages: impl IntoIterator<Item = &'a str>) -> u32 {
        messages.into_iter().map(|text| self.count(text) + 3).sum::<u32>() + 3
    }
}

/// Trains a small byte-level BPE of at most `vocab_size` tokens on
/// `texts` and returns its `tokenizer.json`: tests make the tokenizer
/// they count with, nothing is downloaded.
pub fn train_tokenizer(texts: &[&str], vocab_size: usize) -> Result<String, String> {
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(0)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer = tokenizers::TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_post_processor(Some(ByteLevel::default()))
        .with_decoder(Some(ByteLevel::default()))
        .build()
        .map_err(|e| e.to_string())?;
    tokenizer.train(&mut trainer, texts.iter()).map_err(|e| e.to_string())?;
    let tokenizer: tokenizers::Tokenizer = tokenizer.into();
    tokenizer.to_string(false).map_err(|e| e.to_string())
}

/// SplitMix64: small, fast, and the same sequence everywhere for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[low, high]`.
    pub fn between(&mut self, low: u32, high: u32) -> u32 {
        if high <= low {
            return low;
        }
        low + (self.next_u64() % u64::from(high - low + 1)) as u32
    }
}

/// FNV-1a, to mix request content into a seed.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn count_words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

/// Prompt tokens of chat messages given as their texts.
pub fn chat_prompt_tokens<'a>(messages: impl IntoIterator<Item = &'a str>) -> u32 {
    TextCounter::Words.chat(messages)
}

/// Generated tokens: one word each, with its leading space as in BPE vocabularies.
const VOCABULARY: [&str; 48] = [
    " the", " model", " serves", " tokens", " quickly", " and", " every", " request", " is", " metered", " by",
    " gateway", " with", " care", " a", " plan", " limits", " usage", " per", " minute", " while", " streams", " flow",
    " to", " clients", " who", " read", " each", " chunk", " as", " it", " arrives", " from", " GPU", " servers",
    " in", " data", " center", " so", " nothing", " gets", " lost", " or", " counted", " twice", " today", " again",
    " here",
];

/// The next generated token.
pub fn token_text(rng: &mut Rng) -> &'static str {
    VOCABULARY[(rng.next_u64() % VOCABULARY.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_counts_words() {
        assert_eq!(count_words("Hello,  world!\nHow are you?"), 5);
        assert_eq!(count_words(""), 0);
        assert_eq!(chat_prompt_tokens(["You are helpful.", "Say hi"]), 3 + 3 + 2 + 3 + 3);
    }

    #[test]
    fn the_same_seed_gives_the_same_text() {
        let text = |seed| {
            let mut rng = Rng::new(seed);
            (0..20).map(|_| token_text(&mut rng)).collect::<String>()
        };
        assert_eq!(text(7), text(7));
        assert_ne!(text(7), text(8));
        assert_eq!(count_words(&text(7)), 20, "every token is one word");
    }

    #[test]
    fn a_trained_tokenizer_counts_what_it_learned_cheaply() {
        let corpus = ["the model serves tokens quickly and every request is metered"; 50];
        let json = train_tokenizer(&corpus, 300).unwrap();
        let counter = TextCounter::Tokenizer(std::sync::Arc::new(json.parse().unwrap()));
        let known = counter.count("the model serves tokens");
        assert!((1..=8).contains(&known), "{known}");
        // Text it never saw falls back to a token per byte.
        assert_eq!(counter.count("zqxj"), 4);
    }

    #[test]
    fn ranges_are_inclusive_and_uniformish() {
        let mut rng = Rng::new(1);
        let draws: Vec<u32> = (0..1000).map(|_| rng.between(3, 5)).collect();
        assert!(draws.iter().all(|d| (3..=5).contains(d)));
        assert!((3..=5).all(|v| draws.iter().filter(|d| **d == v).count() > 250));
        assert_eq!(rng.between(9, 9), 9);
        let f = rng.next_f64();
        assert!((0.0..1.0).contains(&f));
    }
}

//! Generation: the planned output of one request, sent as one JSON body or
//! as server-sent events with the model's timing, counted as it goes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;

use crate::SimState;
use crate::meter::Ending;
use crate::openai::{Choice, ChunkStep, Kind, ResponseMeta, StreamOptions};
use crate::peer::Peer;
use crate::responses::EventWriter;
use crate::tokens::Rng;

/// Everything decided about a response before it starts.
pub struct Generation {
    pub meta: ResponseMeta,
    pub app: String,
    pub prompt_tokens: u32,
    /// `n` of them; the Responses API has one.
    pub choices: Vec<Choice>,
    pub options: StreamOptions,
    /// Cut the stream (connection reset) after this many tokens.
    pub reset_after: Option<usize>,
    pub ttft: Duration,
    pub itl: Duration,
    /// Splits every streamed event into random pieces, when set.
    pub fragments: Option<Rng>,
    /// Stamps token chunks with their emission time.
    pub stamp: bool,
    /// The request in the model's GPU server, which paces its tokens
    /// instead of `ttft` and `itl`.
    pub sequence: Option<crate::engine::Sequence>,
}

impl Generation {
    pub(crate) fn completion_tokens(&self) -> u32 {
        self.choices.iter().map(|c| c.tokens.len() as u32).sum()
    }

    /// Tokens of the longest choice: the steps a stream takes.
    pub(crate) fn longest(&self) -> usize {
        self.choices.iter().map(|c| c.tokens.len()).max().unwrap_or(0)
    }

    /// The whole response, after the time generating it would take (the
    /// choices are generated side by side). A client that leaves before
    /// gets nothing, and nothing is counted as sent.
    pub async fn complete(mut self, state: Arc<SimState>) -> Value {
        let mut tally = Tally::new(state, &self);
        let longest = self.longest();
        match self.sequence.as_mut() {
            Some(sequence) => {
                for _ in 0..longest {
                    sequence.next_token().await;
                }
            }
            None => pause(self.ttft + self.itl * longest.saturating_sub(1) as u32).await,
        }
        tally.sent = self.completion_tokens();
        tally.ending = Some(Ending::Complete);
        self.meta
            .complete(&self.choices, self.prompt_tokens, self.completion_tokens())
    }
}

impl Generation {
    /// Waits until token `index` is generated.
    async fn token_ready(&mut self, index: usize) {
        match self.sequence.as_mut() {
            Some(sequence) => {
                sequence.next_token().await;
            }
            None => pause(if index == 0 { self.ttft } else { self.itl }).await,
        }
    }
}

async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Counts what a stream sent when it ends, however it ends: a stream
/// dropped before its last event was abandoned by the client.
struct Tally {
    state: Arc<SimState>,
    app: String,
    model: String,
    sent: u32,
    ending: Option<Ending>,
}

impl Tally {
    fn new(state: Arc<SimState>, generation: &Generation) -> Tally {
        Tally {
            state,
            app: generation.app.clone(),
            model: generation.meta.model.clone(),
            sent: 0,
            ending: None,
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let ending = self.ending.unwrap_or(Ending::Aborted);
        self.state.meter.finish(&self.app, &self.model, self.sent, ending);
    }
}

enum Step {
    /// A chat stream opens with the assistant role and empty content, a
    /// response stream with its `response.created` … events.
    Role,
    /// Token `n`, or the finish chunk once every token is out.
    Token(usize),
    Usage,
    Done,
    End,
}

struct Streaming {
    generation: Generation,
    tally: Tally,
    step: Step,
    /// The client connection, checked before every token.
    peer: Option<Peer>,
    events: EventWriter,
    /// Pieces of a fragmented event still to send.
    pieces: std::collections::VecDeque<Bytes>,
}

impl Streaming {
    fn with_usage(&self, mut chunk: Value) -> Value {
        if self.generation.options.continuous() && self.generation.options.include_usage {
            chunk["usage"] = crate::openai::usage(self.generation.prompt_tokens, self.tally.sent);
        }
        chunk
    }

    /// Whether the client left: the stream ends, counting only what was sent.
    fn abandoned(&mut self) -> bool {
        let gone = self.peer.is_some_and(|peer| peer.hung_up());
        if gone {
            self.step = Step::End;
        }
        gone
    }

    /// The next piece of the stream: the next event whole, or its pieces.
    async fn next_piece(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if let Some(piece) = self.pieces.pop_front() {
            // Let hyper write the previous piece on its own first.
            tokio::task::yield_now().await;
            return Some(Ok(piece));
        }
        let item = self.next().await?;
        let (Ok(event), Some(rng)) = (&item, self.generation.fragments.as_mut()) else {
            return Some(item);
        };
        if event.len() < 2 {
            return Some(item);
        }
        let last = event.len() as u32 - 1;
        let mut cuts: Vec<usize> = (1..rng.between(1, 4)).map(|_| rng.between(1, last) as usize).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut start = 0;
        for cut in cuts {
            self.pieces.push_back(event.slice(start..cut));
            start = cut;
        }
        self.pieces.push_back(event.slice(start..));
        self.pieces.pop_front().map(Ok)
    }

    /// One chunk per choice, as events of one write.
    fn chunks(&self, mut chunk_of: impl FnMut(usize, &Choice) -> Option<Value>) -> Bytes {
        let mut out = Vec::new();
        for (index, choice) in self.generation.choices.iter().enumerate() {
            if let Some(mut chunk) = chunk_of(index, choice) {
                if self.generation.stamp {
                    chunk["sim_emitted_ns"] = unix_nanos().into();
                }
                out.extend_from_slice(&event(&self.with_usage(chunk)));
            }
        }
        Bytes::from(out)
    }

    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let g = &self.generation;
        match self.step {
            Step::Role => {
                // As vLLM: the opening goes out at once, the first token after TTFT.
                if self.abandoned() {
                    return None;
                }
                let g = &self.generation;
                self.step = Step::Token(0);
                if g.meta.kind == Kind::Response {
                    return Some(Ok(Bytes::from(self.events.opening(&g.meta))));
                }
                let meta = &g.meta;
                Some(Ok(self.chunks(|index, choice| {
                    Some(meta.chunk(index, choice, None, ChunkStep::Opening))
                })))
            }
            Step::Token(index) if index < g.longest() => {
                if g.reset_after == Some(index) {
                    // Let hyper flush what was sent before cutting the
                    // connection, so `sent` is what went on the wire.
                    pause(Duration::from_millis(5)).await;
                    self.tally.ending = Some(Ending::Reset);
                    self.step = Step::End;
                    return Some(Err(std::io::Error::other("injected connection reset")));
                }
                self.generation.token_ready(index).await;
                if self.abandoned() {
                    return None;
                }
                let g = &self.generation;
                self.step = Step::Token(index + 1);
                let emitting = g.choices.iter().filter(|c| c.tokens.len() > index).count() as u32;
                self.tally.sent += emitting;
                if g.meta.kind == Kind::Response {
                    let token = g.choices[0].tokens[index].clone();
                    return Some(Ok(Bytes::from(self.events.delta(&self.generation.meta, &token))));
                }
                let step = if index == 0 {
                    ChunkStep::FirstPiece
                } else {
                    ChunkStep::Piece
                };
                let meta = &self.generation.meta;
                Some(Ok(self.chunks(|i, choice| {
                    choice
                        .tokens
                        .get(index)
                        .map(|token| meta.chunk(i, choice, Some(token), step))
                })))
            }
            Step::Token(_) if g.meta.kind == Kind::Response => {
                let first = &g.choices[0];
                let closing = self.events.closing(
                    &g.meta,
                    &first.text(),
                    first.finish_reason,
                    g.prompt_tokens,
                    self.tally.sent,
                );
                self.tally.ending = Some(Ending::Complete);
                self.step = Step::End;
                Some(Ok(Bytes::from(closing)))
            }
            Step::Token(_) => {
                self.step = if g.options.include_usage {
                    Step::Usage
                } else {
                    Step::Done
                };
                let meta = &self.generation.meta;
                Some(Ok(self.chunks(|index, choice| {
                    Some(meta.chunk(index, choice, None, ChunkStep::Finish))
                })))
            }
            Step::Usage => {
                self.step = Step::Done;
                Some(Ok(event(&g.meta.usage_chunk(g.prompt_tokens, self.tally.sent))))
            }
            Step::Done => {
                self.tally.ending = Some(Ending::Complete);
                self.step = Step::End;
                Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
            }
            Step::End => None,
        }
    }
}

/// The response as server-sent events, in vLLM's chunk shapes; `peer` is
/// the client connection, watched for a hang-up.
pub fn sse(
    state: Arc<SimState>,
    generation: Generation,
    peer: Option<Peer>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let tally = Tally::new(state, &generation);
    let step = match generation.meta.kind {
        Kind::Chat | Kind::Response => Step::Role,
        Kind::Completion => Step::Token(0),
    };
    let streaming = Streaming {
        generation,
        tally,
        step,
        peer,
        events: EventWriter::default(),
        pieces: std::collections::VecDeque::new(),
    };
    futures_util::stream::unfold(streaming, |mut streaming| async move {
        let item = streaming.next_piece().await?;
        Some((item, streaming))
    })
}

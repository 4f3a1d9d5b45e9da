//! The model layer of mismatch: three model families on candle behind one interface
//! ([`CausalLm`] for decoders), generation with log-probs, teacher-forced scoring,
//! HF-layout checkpoints and the local model cache.

pub mod attention;
pub mod backprop;
pub mod checkpoint;
pub mod decoder;
pub mod error;
pub mod gpt;
mod gpt_block;
pub use gpt::{Gpt, GptConfig};
pub mod hub;
pub mod ops;

pub use attention::{KvCache, Positions};
pub use decoder::{CausalLm, ScalarHead};
pub use error::{Error, Result};
pub mod engine;
pub mod generate;
pub mod score;

pub use generate::{generate, Generation, SamplingParams};
pub use score::{completion_logprobs, shared_prompt_logprobs, CompletionLogprobs};
pub mod bert;
pub use bert::{mean_pool, Bert, BertConfig, Encoder, RewardEncoder};
pub mod gguf;
pub mod llama;
pub mod llama_ops;
pub mod tokenizer;

pub use llama::{Llama, LlamaConfig};
pub use tokenizer::{ChatMessage, Tok};
pub mod load;
pub mod optim;
pub mod pool;
pub mod seed;
pub use load::{load_causal_lm, AnyLm, LoadedLm};

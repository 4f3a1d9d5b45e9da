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

pub use generate::{generate, Generation, SamplingParams, Stepper};
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

/// The device a spec names: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
pub fn device(spec: &str) -> Result<candle_core::Device> {
    let ordinal = match spec {
        "cpu" => return Ok(candle_core::Device::Cpu),
        "cuda" => Some(0),
        s => s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()),
    };
    let Some(n) = ordinal else {
        return Err(Error::Usage(format!("--device {spec}: expected cpu, cuda or cuda:N")));
    };
    if cfg!(feature = "cuda") {
        candle_core::Device::new_cuda(n).map_err(|e| Error::Usage(format!("--device {spec}: {e}")))
    } else {
        Err(Error::Usage(format!(
            "--device {spec}: this build has no CUDA support (build with `cargo build --release --features cuda -p mismatch-cli`)"
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_specs_are_cpu_or_cuda() {
        assert!(super::device("cpu").unwrap().is_cpu());
        let e = super::device("gpu").unwrap_err().to_string();
        assert!(e.contains("expected cpu, cuda or cuda:N"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = super::device("cuda:1").unwrap_err().to_string();
            assert!(e.contains("no CUDA support") && e.contains("--features cuda"), "{e}");
        }
    }
}

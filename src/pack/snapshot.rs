//! burn's snapshot stores, spelling diffusers' keys.
//!
//! Our models are burn `Module`s whose field names are diffusers' parameter names, so burn's
//! own save and load (`burn::store::ModuleSnapshot`) read and write diffusers-keyed
//! safetensors once the store leaves out the variant names of our enums
//! ([`crate::pack::weights::Weight`]'s `Float`/`Quantized`, the attention processors) and
//! renames the few paths a Rust field cannot spell: PyTorch's `ModuleList`/`Sequential`
//! indices ([`RENAMED`]).

use burn::store::SafetensorsStore;

/// Path segments burn spells from our fields, and the diffusers keys they stand for.
/// A leading `^` anchors the segment at the start of the key.
pub const RENAMED: [(&str, &str); 6] = [
    // `Attention.to_out` is `ModuleList([Linear, Dropout])`.
    (".to_out.", ".to_out.0."),
    // `FeedForward.net` is `ModuleList([GEGLU(proj), Dropout, Linear])`.
    (".ff.proj.", ".ff.net.0.proj."),
    (".ff.out.", ".ff.net.2."),
    // A block's resampler is `downsamplers.0` / `upsamplers.0`, its conv `.conv`.
    (".downsampler.", ".downsamplers.0.conv."),
    (".upsampler.", ".upsamplers.0.conv."),
    // `UNetMidBlock2DCrossAttn.attentions` holds its one transformer.
    ("^mid_block.attention.", "mid_block.attentions.0."),
];

/// An empty store to save a module into: its keys come out as diffusers'.
pub fn saving_store() -> SafetensorsStore {
    RENAMED.iter().fold(SafetensorsStore::from_bytes(None).skip_enum_variants(true), |store, (ours, theirs)| {
        store.with_key_remapping(pattern(ours), theirs.trim_start_matches('^'))
    })
}

/// A store over diffusers-keyed safetensors `bytes` for a module to load from.
pub fn loading_store(bytes: Vec<u8>) -> SafetensorsStore {
    RENAMED.iter().fold(SafetensorsStore::from_bytes(Some(bytes)).skip_enum_variants(true), |store, (ours, theirs)| {
        let anchor = if ours.starts_with('^') { "^" } else { "" };
        store.with_key_remapping(format!("{anchor}{}", pattern(theirs)), ours.trim_start_matches('^'))
    })
}

/// `segment` as a regex: its dots literal, a leading `^` kept.
fn pattern(segment: &str) -> String {
    segment.replace('.', r"\.")
}

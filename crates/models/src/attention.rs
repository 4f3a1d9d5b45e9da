//! Causal self-attention pieces shared by the decoders: padding-aware masks and positions,
//! the key/value cache, and scaled dot-product attention (Vaswani et al. 2017).

use crate::ops::softmax_last_dim;
use candle_core::{Device, Result, Tensor};

/// Additive bias for masked attention logits. Finite rather than −∞ so that a query whose every
/// key is masked (a left-padding slot) gets a uniform, finite distribution instead of NaN; its
/// output is never read.
pub const MASKED: f32 = -1e9;

/// Per-layer key/value cache for incremental decoding. A layer holds either keys and values
/// `[b, kv_heads, t, head_dim]` grown by concatenation (differentiable), or one packed
/// `[b, capacity, width]` buffer per layer written in place ([`KvCache::append_packed`]), whose
/// first rows along dimension 1 are the cached tokens: no copy of the past per step.
/// Not `Clone`: packed layers are written in place, so a copy would share them.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<Entry>>,
    /// Rows a packed layer is first allocated with (0: as many as the first append brings).
    capacity: usize,
}

#[derive(Debug, Clone)]
enum Entry {
    Split(Tensor, Tensor),
    Packed { buf: Tensor, len: usize },
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self::with_capacity(num_layers, 0)
    }

    /// A cache whose packed layers start with room for `capacity` positions (the prompt plus
    /// the new tokens, when the caller knows them), so that decoding never regrows them.
    pub fn with_capacity(num_layers: usize, capacity: usize) -> Self {
        Self { layers: vec![None; num_layers], capacity }
    }

    /// Number of cached positions (0 when empty).
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some(Entry::Split(k, _))) => k.dim(2).unwrap_or(0),
            Some(Some(Entry::Packed { len, .. })) => *len,
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this step's keys/values for `layer` and returns the full keys/values.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match &self.layers[layer] {
            None => (k.clone(), v.clone()),
            Some(Entry::Split(pk, pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
            Some(Entry::Packed { .. }) => candle_core::bail!("layer {layer} of the KV cache is packed"),
        };
        self.layers[layer] = Some(Entry::Split(k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Writes the rows `x` `[b, t, width]` after the cached ones of `layer`, in place (capacity
    /// doubles when full), and returns the buffer `[b, capacity, width]` with the number of
    /// rows cached before this call. Not differentiable.
    pub fn append_packed(&mut self, layer: usize, x: &Tensor) -> Result<(Tensor, usize)> {
        let (b, t, w) = x.dims3()?;
        let x = x.contiguous()?;
        let (buf, past) = match self.layers[layer].take() {
            None => (Tensor::zeros((b, t.max(self.capacity).max(16), w), x.dtype(), x.device())?, 0),
            Some(Entry::Packed { buf, len }) if len + t <= buf.dim(1)? => (buf, len),
            Some(Entry::Packed { buf, len }) => {
                let grown = Tensor::zeros((b, (2 * buf.dim(1)?).max(len + t), w), x.dtype(), x.device())?;
                grown.slice_set(&buf.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
                (grown, len)
            }
            Some(Entry::Split(..)) => candle_core::bail!("layer {layer} of the KV cache holds split keys and values"),
        };
        buf.slice_set(&x, 1, past)?;
        self.layers[layer] = Some(Entry::Packed { buf: buf.clone(), len: past + t });
        Ok((buf, past))
    }

    /// Keeps (or repeats) the rows in `rows`: finished sequences leaving a batch, or one cached
    /// prompt shared by several rows.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for l in self.layers.iter_mut().flatten() {
            *l = match l {
                Entry::Split(k, v) => {
                    Entry::Split(k.contiguous()?.index_select(rows, 0)?, v.contiguous()?.index_select(rows, 0)?)
                }
                Entry::Packed { buf, len } => Entry::Packed { buf: buf.index_select(rows, 0)?, len: *len },
            };
        }
        Ok(())
    }

    /// Stacks `other`'s rows below this cache's, the shorter of the two left-padded with zeros
    /// to the longer's length: a request joining a running batch (continuous batching). The
    /// caller masks the padding columns, as it masks a prompt's left padding.
    pub fn join(&mut self, other: KvCache) -> Result<()> {
        if self.is_empty() {
            let capacity = self.capacity;
            *self = other;
            self.capacity = self.capacity.max(capacity);
            return Ok(());
        }
        if other.layers.len() != self.layers.len() {
            candle_core::bail!("joining KV caches of {} and {} layers", self.layers.len(), other.layers.len());
        }
        let t = self.len().max(other.len());
        for (mine, theirs) in self.layers.iter_mut().zip(other.layers) {
            *mine = match (mine.take(), theirs) {
                (Some(Entry::Split(k1, v1)), Some(Entry::Split(k2, v2))) => Some(Entry::Split(
                    Tensor::cat(&[left_pad(&k1, 2, t)?, left_pad(&k2, 2, t)?], 0)?,
                    Tensor::cat(&[left_pad(&v1, 2, t)?, left_pad(&v2, 2, t)?], 0)?,
                )),
                (Some(Entry::Packed { buf: b1, len: l1 }), Some(Entry::Packed { buf: b2, len: l2 })) => {
                    // Room for as many further tokens as the roomier of the two had.
                    let room = (b1.dim(1)? - l1).max(b2.dim(1)? - l2).max(16);
                    let a = left_pad(&b1.narrow(1, 0, l1)?, 1, t)?;
                    let b = left_pad(&b2.narrow(1, 0, l2)?, 1, t)?;
                    let joined = Tensor::cat(&[a, b], 0)?;
                    let (rows, _, w) = joined.dims3()?;
                    let buf = Tensor::zeros((rows, t + room, w), joined.dtype(), joined.device())?;
                    buf.slice_set(&joined, 1, 0)?;
                    Some(Entry::Packed { buf, len: t })
                }
                (None, None) => None,
                _ => candle_core::bail!("joining KV caches of different layouts"),
            };
        }
        Ok(())
    }

    /// Drops the oldest `n` positions of every row: columns every row masks (the padding left
    /// behind by rows that have left the batch), so that the cache stays as long as its longest
    /// live row rather than growing for as long as the batch runs.
    pub fn drop_front(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        for l in self.layers.iter_mut().flatten() {
            *l = match l {
                Entry::Split(k, v) => {
                    let t = k.dim(2)?;
                    Entry::Split(k.narrow(2, n, t - n)?.contiguous()?, v.narrow(2, n, t - n)?.contiguous()?)
                }
                Entry::Packed { buf, len } => {
                    let kept = buf.narrow(1, n, *len - n)?;
                    let fresh = buf.zeros_like()?;
                    fresh.slice_set(&kept.contiguous()?, 1, 0)?;
                    Entry::Packed { buf: fresh, len: *len - n }
                }
            };
        }
        Ok(())
    }
}

/// `x` with zeros prepended along `dim` up to length `t`.
fn left_pad(x: &Tensor, dim: usize, t: usize) -> Result<Tensor> {
    let have = x.dim(dim)?;
    if have == t {
        return Ok(x.clone());
    }
    let mut shape = x.dims().to_vec();
    shape[dim] = t - have;
    Tensor::cat(&[&Tensor::zeros(shape, x.dtype(), x.device())?, x], dim)
}

/// The inputs a decoder needs besides token ids: per-token positions and the attention bias.
#[derive(Debug, Clone)]
pub struct Positions {
    /// `[b, t]` u32: position of each new token (0 for the first real token of a row).
    pub positions: Tensor,
    /// `[b, 1, t, past + t]` f32 additive bias: 0 where attention is allowed, [`MASKED`] elsewhere.
    pub bias: Tensor,
}

impl Positions {
    /// Builds positions and the causal, padding-aware bias from a `[b, past + t]` 0/1 mask
    /// (1 = real token) covering the cached and the new tokens; the new tokens are the last `t`.
    pub fn from_mask(mask: &[Vec<u8>], t: usize, device: &Device) -> Result<Self> {
        let b = mask.len();
        let total = mask.first().map_or(0, |m| m.len());
        let past = total.checked_sub(t).expect("mask shorter than new tokens");
        let mut pos = Vec::with_capacity(b * t);
        let mut bias = Vec::with_capacity(b * t * total);
        for row in mask {
            assert_eq!(row.len(), total, "ragged attention mask");
            let mut count = 0u32;
            let mut cum = Vec::with_capacity(total);
            for &m in row {
                count += m as u32;
                cum.push(count.saturating_sub(1));
            }
            for i in 0..t {
                let q = past + i;
                pos.push(cum[q]);
                for (j, &m) in row.iter().enumerate() {
                    bias.push(if j <= q && m == 1 { 0.0 } else { MASKED });
                }
            }
        }
        Ok(Self {
            positions: Tensor::from_vec(pos, (b, t), device)?,
            bias: Tensor::from_vec(bias, (b, 1, t, total), device)?,
        })
    }

    /// Unpadded causal batch of `b` rows and `t` tokens with no cache.
    pub fn causal(b: usize, t: usize, device: &Device) -> Result<Self> {
        Self::from_mask(&vec![vec![1u8; t]; b], t, device)
    }
}

/// Scaled dot-product attention with grouped-query heads.
/// `q`: `[b, h, t, d]`; `k`, `v`: `[b, kv, s, d]` with `h % kv == 0`; `bias`: `[b, 1, t, s]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let kv = k.dim(1)?;
    let (k, v) = if kv == h { (k.clone(), v.clone()) } else { (repeat_kv(k, h / kv)?, repeat_kv(v, h / kv)?) };
    let scale = 1.0 / (d as f64).sqrt();
    let att = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
    let att = att.broadcast_add(bias)?;
    let att = softmax_last_dim(&att)?;
    let out = att.matmul(&v.contiguous()?)?;
    debug_assert_eq!(out.dims(), &[b, h, t, d]);
    Ok(out)
}

/// `[b, kv, s, d]` → `[b, kv·n, s, d]`, each kv head repeated `n` times consecutively.
pub fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, kv, s, d) = x.dims4()?;
    x.unsqueeze(2)?.broadcast_as((b, kv, n, s, d))?.reshape((b, kv * n, s, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn positions_and_bias_for_left_padding_with_cache() {
        let dev = Device::Cpu;
        // row 0: two pads then 3 tokens; row 1: 5 tokens. Last 2 columns are new.
        let mask = vec![vec![0, 0, 1, 1, 1], vec![1, 1, 1, 1, 1]];
        let p = Positions::from_mask(&mask, 2, &dev).unwrap();
        assert_eq!(p.positions.to_vec2::<u32>().unwrap(), vec![vec![1, 2], vec![3, 4]]);
        let bias = p.bias.squeeze(1).unwrap().to_vec3::<f32>().unwrap();
        let m = MASKED;
        assert_eq!(bias[0], vec![vec![m, m, 0.0, 0.0, m], vec![m, m, 0.0, 0.0, 0.0]]);
        assert_eq!(bias[1], vec![vec![0.0, 0.0, 0.0, 0.0, m], vec![0.0; 5]]);
    }

    /// Packed layers keep every row written, across a capacity doubling and a row selection.
    #[test]
    fn packed_cache_grows_and_keeps_its_rows() {
        let dev = Device::Cpu;
        let rows = |b: usize, t: usize, start: f32| {
            Tensor::arange(start, start + (b * t * 3) as f32, &dev).unwrap().reshape((b, t, 3)).unwrap()
        };
        let mut cache = KvCache::new(1);
        let a = rows(2, 10, 0.0);
        let (buf, past) = cache.append_packed(0, &a).unwrap();
        assert_eq!((past, buf.dim(1).unwrap(), cache.len()), (0, 16, 10));
        let b = rows(2, 10, 100.0);
        let (buf, past) = cache.append_packed(0, &b).unwrap();
        assert_eq!((past, buf.dim(1).unwrap(), cache.len()), (10, 32, 20));
        let want = Tensor::cat(&[&a, &b], 1).unwrap();
        assert_eq!(buf.narrow(1, 0, 20).unwrap().to_vec3::<f32>().unwrap(), want.to_vec3::<f32>().unwrap());
        cache.select_rows(&Tensor::new(&[1u32, 1, 0], &dev).unwrap()).unwrap();
        let (buf, past) = cache.append_packed(0, &rows(3, 1, -9.0)).unwrap();
        assert_eq!(past, 20);
        assert_eq!(
            buf.get(1).unwrap().narrow(0, 0, 20).unwrap().to_vec2::<f32>().unwrap(),
            want.get(1).unwrap().to_vec2::<f32>().unwrap()
        );
        assert_eq!(buf.get(2).unwrap().get(20).unwrap().to_vec1::<f32>().unwrap(), vec![-3.0, -2.0, -1.0]);
        // One layer cannot hold both kinds.
        assert!(cache
            .append(
                0,
                &Tensor::zeros((3, 1, 1, 3), DType::F32, &dev).unwrap(),
                &Tensor::zeros((3, 1, 1, 3), DType::F32, &dev).unwrap()
            )
            .is_err());
    }

    #[test]
    fn attention_with_uniform_keys_averages_values() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 1, 4), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::ones((1, 1, 3, 4), candle_core::DType::F32, &dev).unwrap();
        let v = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((1, 1, 3, 4)).unwrap();
        let bias = Tensor::zeros((1, 1, 1, 3), candle_core::DType::F32, &dev).unwrap();
        let out = attention(&q, &k, &v, &bias).unwrap();
        let out = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = [4.0, 5.0, 6.0, 7.0, 4.0, 5.0, 6.0, 7.0];
        assert!(out.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5), "{out:?}");
    }
}

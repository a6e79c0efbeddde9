//! Key/value cache for incremental decoding: one `[batch, kv_heads, capacity, head_dim]` pair of
//! buffers per layer, the first `len` positions written.
//!
//! A step writes its keys and values into the buffers in place (burn writes into a tensor nothing
//! else holds) and attention reads a view of the written part. Concatenating instead copied the
//! whole cache at every step: quadratic in the answer's length, and two launches a tensor on a GPU.
//! A full buffer doubles, so a long answer is copied a logarithmic number of times.

use burn::tensor::{Int, Tensor, TensorData};

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<Layer>>,
}

/// One layer's buffers and how many positions of them are written.
#[derive(Debug, Clone)]
struct Layer {
    k: Tensor<4>,
    v: Tensor<4>,
    len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers] }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(Option::as_ref).map_or(0, |l| l.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes this step's keys/values `[batch, kv_heads, seq, head_dim]` for `layer` after those
    /// cached and returns the full cached sequence (views of the buffers).
    pub fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let t = k.dims()[2];
        let l = match self.layers[layer].take() {
            // The first write (the prompt) is the buffer, with no room yet: a prompt that is
            // never continued (a scored sequence) costs nothing more.
            None => Layer { k, v, len: t },
            Some(Layer { k: kb, v: vb, len }) => {
                let (kb, vb) = (grown(kb, len, len + t), grown(vb, len, len + t));
                let at = |buf: Tensor<4>, x: Tensor<4>| {
                    let [b, h, _, d] = buf.dims();
                    buf.slice_assign([0..b, 0..h, len..len + t, 0..d], x)
                };
                Layer { k: at(kb, k), v: at(vb, v), len: len + t }
            }
        };
        let written = l.written();
        self.layers[layer] = Some(l);
        written
    }

    /// Layer `layer`'s cached keys and values, `[batch, kv_heads, seq, head_dim]` each.
    pub fn layer(&self, layer: usize) -> Option<(Tensor<4>, Tensor<4>)> {
        Some(self.layers.get(layer)?.as_ref()?.written())
    }

    /// Keeps only the batch rows in `rows` (e.g. to drop finished samples).
    pub fn select_rows(&mut self, rows: &[usize]) {
        for l in self.layers.iter_mut().flatten() {
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(rows.iter().map(|&r| r as i32).collect(), [rows.len()]),
                &l.k.device(),
            );
            l.k = l.k.clone().select(0, idx.clone());
            l.v = l.v.clone().select(0, idx);
        }
    }
}

impl Layer {
    /// Views of the written positions.
    fn written(&self) -> (Tensor<4>, Tensor<4>) {
        (self.k.clone().narrow(2, 0, self.len), self.v.clone().narrow(2, 0, self.len))
    }
}

/// `buf` with room for at least `needed` positions: itself if it has it, else its first `len`
/// positions in a buffer of twice the room.
fn grown(buf: Tensor<4>, len: usize, needed: usize) -> Tensor<4> {
    let [b, h, capacity, d] = buf.dims();
    if needed <= capacity {
        return buf;
    }
    let room = needed.max(2 * capacity);
    let empty = Tensor::zeros([b, h, room - len, d], &buf.device());
    Tensor::cat(vec![buf.narrow(2, 0, len), empty], 2)
}

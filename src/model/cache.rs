//! Key/value cache for incremental decoding: one `[batch, kv_heads, seq, head_dim]` pair per layer.

use burn::tensor::Tensor;

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers] }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dims()[2],
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this step's keys/values for `layer` and returns the full cached sequence.
    pub fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }

    /// Layer `layer`'s cached keys and values, `[batch, kv_heads, seq, head_dim]` each.
    pub fn layer(&self, layer: usize) -> Option<(Tensor<4>, Tensor<4>)> {
        self.layers.get(layer).cloned().flatten()
    }

    /// Keeps only the batch rows in `rows` (e.g. to drop finished samples).
    pub fn select_rows(&mut self, rows: &[usize]) {
        for (k, v) in self.layers.iter_mut().flatten() {
            let device = k.device();
            let idx = burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(rows.iter().map(|&r| r as i32).collect(), [rows.len()]),
                &device,
            );
            *k = k.clone().select(0, idx.clone());
            *v = v.clone().select(0, idx);
        }
    }
}

//! What one training step did, example by example: the data behind the pictures beside the
//! charts. DPO's batch as points on its loss curve (each pair at its margin, with the loss it
//! paid), and RL's round as a table of samples with reward, advantage and KL.

use serde::{Deserialize, Serialize};

use crate::align::best_of_n::Candidate;
use crate::align::rl::SampleScore;
#[cfg(feature = "engine")]
use {
    crate::Result,
    crate::align::dpo::{DpoConfig, DpoLossType, dpo_loss_of_margin},
    crate::align::train::{PerExample, example_column},
    crate::backend::read_f32,
    burn::tensor::{Device, Tensor},
};

/// Points drawn on the curve: enough for a smooth line at the page's size.
#[cfg(feature = "engine")]
const CURVE_POINTS: usize = 81;

/// Crosses to the page inside an event, in postcard's bytes (`Event::to_bytes`): plain serde
/// shapes only, no internal tags or flattened fields, which need a self-describing format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StepDetail {
    /// DPO: the loss as a function of the margin, and the batch's pairs as `[margin, loss]`.
    Pairs { axis: String, curve: Vec<[f64; 2]>, points: Vec<[f64; 2]> },
    /// RL: the round's samples in sample order.
    Samples { rows: Vec<SampleRow> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRow {
    pub prompt: String,
    pub answer: String,
    pub score: SampleScore,
}

/// The DPO picture of a step from the trainer's values per pair (`margin`, `loss`): the curve is
/// the loss itself ([`dpo_loss_of_margin`]) over a span that holds every point, zero and, for IPO,
/// the curve's minimum at `1/(2β)`.
#[cfg(feature = "engine")]
pub async fn dpo_pairs(cfg: &DpoConfig, examples: &PerExample, device: &Device) -> Result<Option<StepDetail>> {
    let (Some(margins), Some(losses)) = (example_column(examples, "margin"), example_column(examples, "loss")) else { return Ok(None) };
    let finite = margins.iter().copied().filter(|m| m.is_finite());
    let (mut lo, mut hi) = finite.fold((-3.0f64, 3.0f64), |(a, b), m| (a.min(m), b.max(m)));
    if cfg.loss_type == DpoLossType::Ipo {
        hi = hi.max(1.0 / cfg.beta);
        lo = lo.min(-1.0);
    }
    let pad = (hi - lo) * 0.05;
    (lo, hi) = (lo - pad, hi + pad);
    let xs: Vec<f32> = (0..CURVE_POINTS).map(|i| (lo + (hi - lo) * i as f64 / (CURVE_POINTS - 1) as f64) as f32).collect();
    let ys = read_f32(dpo_loss_of_margin(cfg, Tensor::<1>::from_floats(xs.as_slice(), device))).await?;
    let axis = match cfg.loss_type {
        DpoLossType::Ipo => "margin h (log-ratio per token, chosen − rejected)",
        _ => "margin β·h (implicit reward, chosen − rejected)",
    };
    Ok(Some(StepDetail::Pairs {
        axis: axis.into(),
        curve: xs.iter().zip(ys).map(|(&x, y)| [x as f64, y as f64]).collect(),
        points: margins.iter().zip(losses).map(|(&m, &l)| [m, l]).collect(),
    }))
}

/// The RL picture of a round: each sample with its prompt, answer and numbers.
pub fn rl_samples(samples: &[Candidate], scores: Vec<SampleScore>) -> StepDetail {
    let rows = samples
        .iter()
        .zip(scores)
        .map(|(c, score)| SampleRow { prompt: c.prompt.to_string(), answer: c.completion.to_string(), score })
        .collect();
    StepDetail::Samples { rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendKind, block_on, open};

    fn curve(cfg: &DpoConfig, margins: Vec<f64>) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
        let device = open(BackendKind::Ndarray).unwrap().device;
        let losses = vec![0.0; margins.len()];
        let examples: PerExample = vec![("margin", margins), ("loss", losses)];
        match block_on(dpo_pairs(cfg, &examples, &device)).unwrap() {
            Some(StepDetail::Pairs { curve, points, .. }) => (curve, points),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_dpo_curve_is_the_loss_over_a_span_that_holds_every_pair() {
        let sigmoid = DpoConfig::default();
        let (c, p) = curve(&sigmoid, vec![-0.4, 7.5]);
        assert_eq!(c.len(), CURVE_POINTS);
        assert!(c[0][0] < -3.0 && c[CURVE_POINTS - 1][0] > 7.5, "{:?} .. {:?}", c[0], c[CURVE_POINTS - 1]);
        assert_eq!(p, vec![[-0.4, 0.0], [7.5, 0.0]]);
        // −log σ(x), written out here in f64.
        for [x, y] in &c {
            assert!((y - (1.0 + (-x).exp()).ln()).abs() < 1e-4 * (1.0 + y), "x {x}: {y}");
        }
        // IPO: (h − 1/(2β))², its minimum at 1/(2β) = 5 inside the span.
        let ipo = DpoConfig { loss_type: DpoLossType::Ipo, ..DpoConfig::default() };
        let (c, _) = curve(&ipo, vec![0.1]);
        assert!(c[CURVE_POINTS - 1][0] >= 10.0);
        let lowest = c.iter().min_by(|a, b| a[1].total_cmp(&b[1])).unwrap();
        assert!((lowest[0] - 5.0).abs() < 0.2 && lowest[1] < 0.05, "{lowest:?}");
        // Without per-pair values (another method) there is no picture.
        let device = open(BackendKind::Ndarray).unwrap().device;
        assert_eq!(block_on(dpo_pairs(&sigmoid, &Vec::new(), &device)).unwrap(), None);
    }

    #[test]
    fn rl_rows_name_their_prompt() {
        let score = |r: f64| SampleScore { reward: r, advantage: 0.0, kl: 0.0 };
        let answers: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
        let cands: Vec<Candidate> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| Candidate { prompt: if i < 2 { "a" } else { "b" }, prompt_ids: &[], completion: a, completion_ids: &[] })
            .collect();
        let StepDetail::Samples { rows } = rl_samples(&cands, (0..4).map(|i| score(i as f64)).collect()) else { panic!() };
        let got: Vec<(&str, &str, f64)> = rows.iter().map(|r| (r.prompt.as_str(), r.answer.as_str(), r.score.reward)).collect();
        assert_eq!(got, vec![("a", "s0", 0.0), ("a", "s1", 1.0), ("b", "s2", 2.0), ("b", "s3", 3.0)]);
    }
}

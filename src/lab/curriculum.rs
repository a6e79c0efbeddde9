//! Curricula: preference pairs ordered by how hard they are before training takes them in that
//! order (`TrainConfig::in_order`). A pair's difficulty is read from a reward source (judges, a
//! reward model or an ensemble) as its margin `r(chosen) − r(rejected)`: a large margin is a pair
//! the reward source finds easy to tell apart, a small or negative one a hard (or mislabelled) one.

use serde::{Deserialize, Serialize};

use crate::data::Preference;
#[cfg(feature = "engine")]
use {super::rewards::Rewarder, super::session::Session, crate::Result, crate::align::Encoding};

/// Which pairs come first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Order {
    /// Largest margin first.
    #[default]
    EasyFirst,
    /// Smallest margin first.
    HardFirst,
}

/// Each pair's margin under `rewarder`, in the pairs' order.
#[cfg(feature = "engine")]
pub async fn margins(session: &Session, rewarder: &Rewarder, enc: &Encoding, pairs: &[Preference]) -> Result<Vec<f64>> {
    let texts: Vec<(String, String)> = pairs.iter().flat_map(|p| [(p.prompt.clone(), p.chosen.clone()), (p.prompt.clone(), p.rejected.clone())]).collect();
    let scores = session.score(rewarder, enc, &texts).await?;
    Ok(scores.chunks(2).map(|cr| cr[0] - cr[1]).collect())
}

/// The pairs with their margins, sorted as `order` says; ties keep the order given.
pub fn order(pairs: &[Preference], margins: &[f64], order: Order) -> Vec<(Preference, f64)> {
    let mut v: Vec<(Preference, f64)> = pairs.iter().cloned().zip(margins.iter().copied()).collect();
    match order {
        Order::EasyFirst => v.sort_by(|a, b| b.1.total_cmp(&a.1)),
        Order::HardFirst => v.sort_by(|a, b| a.1.total_cmp(&b.1)),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::train::Batches;

    fn p(name: &str) -> Preference {
        Preference { prompt: name.into(), chosen: "a".into(), rejected: "b".into() }
    }

    #[test]
    fn pairs_sort_by_margin_and_ties_keep_their_order() {
        let pairs = [p("x"), p("y"), p("z"), p("w")];
        let m = [0.5, 2.0, 0.5, -1.0];
        let names = |v: Vec<(Preference, f64)>| v.into_iter().map(|(p, _)| p.prompt).collect::<Vec<_>>();
        assert_eq!(names(order(&pairs, &m, Order::EasyFirst)), ["y", "x", "z", "w"]);
        assert_eq!(names(order(&pairs, &m, Order::HardFirst)), ["w", "x", "z", "y"]);
    }

    #[test]
    fn a_curriculum_holds_out_the_same_pairs_in_any_order() {
        use crate::lab::run::split_indices;
        use crate::lab::spec::{MethodKind, RunSettings, TrainData};
        let pairs: Vec<Preference> = (0..20).map(|i| Preference { prompt: format!("q{i}"), chosen: "a".into(), rejected: "b".into() }).collect();
        let mut settings = RunSettings { method: MethodKind::Dpo, ..Default::default() };
        settings.train.in_order = true;
        settings.eval.eval_fraction = 0.25;
        let spec = |p: Vec<Preference>| settings.spec(vec![], Encoding::default(), TrainData { pairs: p, ..Default::default() });
        let reversed: Vec<Preference> = pairs.iter().rev().cloned().collect();
        let held = |p: &[Preference]| {
            let (train, eval) = split_indices(p.len(), &spec(p.to_vec()), 1);
            assert!(train.windows(2).all(|w| w[0] < w[1]), "trained on in the order given");
            let mut names: Vec<String> = eval.iter().map(|&i| p[i].prompt.clone()).collect();
            names.sort();
            names
        };
        assert_eq!(held(&pairs).len(), 5);
        assert_eq!(held(&pairs), held(&reversed), "the same pairs held out, whatever the order");
    }

    #[test]
    fn in_order_batches_walk_the_examples_as_given_every_epoch() {
        let mut b = Batches::new(5, 2, 1, true);
        let got: Vec<Vec<usize>> = (0..4).map(|_| b.next()).collect();
        assert_eq!(got, [vec![0, 1], vec![2, 3], vec![0, 1], vec![2, 3]]);
        let mut s = Batches::new(50, 5, 1, false);
        let first: Vec<usize> = (0..10).flat_map(|_| s.next()).collect();
        assert_ne!(first, (0..50).collect::<Vec<_>>(), "shuffled by default");
    }
}

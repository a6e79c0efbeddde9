//! What a lesson's steps run on. A class that took the earlier lessons has gathered their pairs,
//! ratings, ideal answers and prompts on the Data tab, while each step's text, its numbers and its
//! wait are written for the lesson's own ("three reward models on the same sixteen pairs, four
//! held out"). So what was on the Data tab when the lesson began, and the lesson does not bring
//! itself, is carried: a step's action leaves it out. What the lesson brings and what is made
//! during it (pairs the model labelled, a prompt the student added) stays in.
//!
//! Carried items are kept as fingerprints (FNV-1a of each item's text) beside the lesson's place,
//! so a reload keeps the choice without a second copy of the data.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::lesson::Lesson;
use super::spec::TrainData;
use crate::data::{Demonstration, Preference, Unpaired};

/// Fingerprints of the items a lesson found on the Data tab and does not bring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Carried(Vec<u32>);

/// The kinds of item on the Data tab, hashed first: a prompt and a pair never share a fingerprint.
const PAIR: u8 = 0;
const RATING: u8 = 1;
const DEMO: u8 = 2;
const PROMPT: u8 = 3;

/// An item's fingerprint: FNV-1a over its kind and fields, folded to 32 bits (the browser's store
/// keeps numbers as floats). A new item takes a carried one's fingerprint with odds of one in 2³²
/// per carried item (one in 14 million with 300 carried), and then the step leaves it out.
fn fingerprint<T: Hash>(kind: u8, item: &T) -> u32 {
    let mut h = fnv::FnvHasher::default();
    h.write_u8(kind);
    item.hash(&mut h);
    let x = h.finish();
    (x ^ (x >> 32)) as u32
}

/// The fingerprints of a Data tab's worth of items, into `out`.
fn fingerprints(out: &mut Vec<u32>, pairs: &[Preference], unpaired: &[Unpaired], demos: &[Demonstration], prompts: &[String]) {
    out.extend(pairs.iter().map(|x| fingerprint(PAIR, x)));
    out.extend(unpaired.iter().map(|x| fingerprint(RATING, x)));
    out.extend(demos.iter().map(|x| fingerprint(DEMO, x)));
    out.extend(prompts.iter().map(|x| fingerprint(PROMPT, x)));
}

impl Lesson {
    /// What of `data` (the Data tab as the lesson begins) the lesson does not bring.
    pub fn carried(&self, data: &TrainData) -> Carried {
        let mut brought = Vec::new();
        for preset in std::iter::once(&self.setup).chain(self.steps.iter().map(|s| &s.set)) {
            if let Some(d) = &preset.data {
                fingerprints(&mut brought, &d.pairs, &d.unpaired, &d.demos, &d.prompts);
            }
        }
        let mut carried = Vec::new();
        fingerprints(&mut carried, &data.pairs, &data.unpaired, &data.demos, &data.prompts);
        carried.retain(|f| !brought.contains(f));
        Carried(carried)
    }
}

impl Carried {
    /// What a step's action runs on, of the student's `data`: each kind without what was carried
    /// into the lesson, in the data's order, or whole where nothing else is left of it (the lesson
    /// brought none and made none, or the student removed them).
    pub fn leave_out(&self, data: &TrainData) -> TrainData {
        TrainData {
            pairs: self.own(PAIR, &data.pairs),
            unpaired: self.own(RATING, &data.unpaired),
            demos: self.own(DEMO, &data.demos),
            prompts: self.own(PROMPT, &data.prompts),
        }
    }

    /// `items` not carried; all of them when every one is.
    fn own<T: Hash + Clone>(&self, kind: u8, items: &[T]) -> Vec<T> {
        let own: Vec<T> = items.iter().filter(|x| !self.0.contains(&fingerprint(kind, *x))).cloned().collect();
        if own.is_empty() { items.to_vec() } else { own }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(s: &str) -> Preference {
        Preference { prompt: s.into(), chosen: format!("{s} yes"), rejected: format!("{s} no") }
    }

    fn data(pairs: &[&str], prompts: &[&str]) -> TrainData {
        TrainData { pairs: pairs.iter().map(|s| pair(s)).collect(), prompts: prompts.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn a_step_runs_on_what_its_lesson_brought_and_made() {
        let l = Lesson::parse(
            br#"{"alignlab_lab": 1, "id": "t", "title": "T",
                "setup": {"data": {"prompts": ["a", "b"], "pairs": [{"prompt": "p", "chosen": "p yes", "rejected": "p no"}]}},
                "steps": [{"title": "S", "text": "x", "action": "self_label"},
                          {"title": "S2", "text": "x", "action": "train", "set": {"data": {"prompts": ["c"]}}}]}"#,
        )
        .unwrap();
        // Before the lesson: an earlier lesson's pair and prompt, and one this lesson brings too.
        let carried = l.carried(&data(&["old", "p"], &["old", "b"]));
        // The lesson's own, the ones a step brought later, and the ones made during it stay;
        // the data's order is kept.
        let now = data(&["old", "p", "labelled"], &["old", "b", "a", "c", "mine"]);
        assert_eq!(carried.leave_out(&now), data(&["p", "labelled"], &["b", "a", "c", "mine"]));
        // The student removed every one of the lesson's: the whole Data tab.
        assert_eq!(carried.leave_out(&data(&["old"], &["old"])), data(&["old"], &["old"]));
        assert_eq!(carried.leave_out(&TrainData::default()), TrainData::default());
        // Nothing carried (a lesson begun on an empty Data tab, or kept from before this field).
        assert_eq!(Carried::default().leave_out(&now), now);
        // Fingerprints survive the browser's store, which keeps JSON.
        let back: Carried = serde_json::from_str(&serde_json::to_string(&carried).unwrap()).unwrap();
        assert_eq!(back, carried);
        assert_eq!(fingerprint(PAIR, &pair("old")), fingerprint(PAIR, &pair("old")));
        assert_ne!(fingerprint(PAIR, &pair("old")), fingerprint(PAIR, &pair("olds")));
        assert_ne!(fingerprint(PROMPT, &"old".to_string()), fingerprint(RATING, &"old".to_string()));
    }
}

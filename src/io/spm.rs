//! SentencePiece-style BPE over a scored vocabulary with byte fallback: llama2.c's `tokenizer.bin`
//! and GGUF's `llama` tokenizer model. Merges are not listed; the adjacent pair whose merged piece
//! has the highest score is merged first.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct SpmTokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    ids: HashMap<String, u32>,
    /// `byte_ids[b]` is the id of `<0xBB>`, when the vocabulary has byte-fallback pieces.
    byte_ids: Option<[u32; 256]>,
    /// The character the vocabulary uses for a space (`' '` in llama2.c, `'▁'` in GGUF/HF).
    space: char,
    /// Prepend a space before encoding, as SentencePiece's `add_dummy_prefix` does.
    pub add_dummy_prefix: bool,
    /// Ids that decode to nothing (`<s>`, `</s>`, `<unk>`, control tokens).
    control: Vec<bool>,
}

impl SpmTokenizer {
    /// A vocabulary of `pieces` with one score and one control flag each.
    pub fn new(pieces: Vec<String>, scores: Vec<f32>, control: Vec<bool>, space: char) -> Result<Self> {
        if pieces.is_empty() {
            return Err(Error::Tokenizer("the SentencePiece vocabulary is empty".into()));
        }
        if scores.len() != pieces.len() || control.len() != pieces.len() {
            return Err(Error::Tokenizer(format!(
                "the SentencePiece vocabulary has {} pieces but {} scores and {} token types; the file is corrupt",
                pieces.len(),
                scores.len(),
                control.len()
            )));
        }
        if pieces.len() > u32::MAX as usize {
            return Err(Error::Tokenizer("the SentencePiece vocabulary has more pieces than ids".into()));
        }
        let ids = pieces.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect::<HashMap<_, _>>();
        let mut byte_ids = [0u32; 256];
        let mut all = true;
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            match ids.get(&format!("<0x{b:02X}>")) {
                Some(&id) => *slot = id,
                None => all = false,
            }
        }
        Ok(Self { pieces, scores, ids, byte_ids: all.then_some(byte_ids), space, add_dummy_prefix: true, control })
    }

    /// The longest piece in bytes: no token covers more text than this.
    pub fn max_piece_bytes(&self) -> usize {
        self.pieces.iter().map(String::len).max().unwrap_or(1)
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        if text.is_empty() {
            return Vec::new();
        }
        let text = if self.add_dummy_prefix { format!(" {text}") } else { text.to_string() };
        let text: String = text.chars().map(|c| if c == ' ' { self.space } else { c }).collect();

        let mut tokens: Vec<u32> = Vec::with_capacity(text.len());
        let mut buf = [0u8; 4];
        for c in text.chars() {
            match self.ids.get(c.encode_utf8(&mut buf) as &str) {
                Some(&id) => tokens.push(id),
                None => match &self.byte_ids {
                    Some(bytes) => tokens.extend(c.encode_utf8(&mut buf).bytes().map(|b| bytes[b as usize])),
                    None => tokens.push(0), // no byte fallback: <unk>
                },
            }
        }
        self.merge(tokens)
    }

    /// Repeatedly merges the adjacent pair whose merged piece scores highest (the leftmost on a
    /// tie) until no pair merges. A heap of candidate pairs over a linked list of symbols makes it
    /// O(n log n) in the text's length; a stale candidate (one side already merged) is skipped.
    fn merge(&self, tokens: Vec<u32>) -> Vec<u32> {
        let n = tokens.len();
        let mut id = tokens;
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut next: Vec<Option<usize>> = (0..n).map(|i| Some(i + 1).filter(|&j| j < n)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let candidate = |id: &[u32], left: usize, right: usize| -> Option<Candidate> {
            let merged = format!("{}{}", self.pieces[id[left] as usize], self.pieces[id[right] as usize]);
            let &merged = self.ids.get(&merged)?;
            let score = self.scores[merged as usize];
            Some(Candidate { score, left, right, ids: (id[left], id[right]), merged })
        };
        for i in 1..n {
            heap.extend(candidate(&id, i - 1, i));
        }
        while let Some(c) = heap.pop() {
            let fresh = alive[c.left] && alive[c.right] && next[c.left] == Some(c.right) && (id[c.left], id[c.right]) == c.ids;
            if !fresh {
                continue;
            }
            id[c.left] = c.merged;
            alive[c.right] = false;
            next[c.left] = next[c.right];
            if let Some(after) = next[c.right] {
                prev[after] = Some(c.left);
                heap.extend(candidate(&id, c.left, after));
            }
            if let Some(before) = prev[c.left] {
                heap.extend(candidate(&id, before, c.left));
            }
        }
        (0..n).filter(|&i| alive[i]).map(|i| id[i]).collect()
    }

    /// Decodes ids to text; byte pieces are reassembled into UTF-8, the dummy prefix is dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(piece) = self.pieces.get(id as usize) else { continue };
            if self.control.get(id as usize).copied().unwrap_or(false) {
                continue;
            }
            if let Some(b) = parse_byte_piece(piece) {
                bytes.push(b);
            } else {
                let s: String = piece.chars().map(|c| if c == self.space { ' ' } else { c }).collect();
                bytes.extend(s.as_bytes());
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match (self.add_dummy_prefix, text.strip_prefix(' ')) {
            (true, Some(rest)) => rest.to_string(),
            _ => text,
        }
    }
}

/// A possible merge of the symbols at `left` and `right` (indices into the original sequence,
/// which keep the text's order), while they still hold `ids`.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    ids: (u32, u32),
    merged: u32,
}

impl Ord for Candidate {
    /// Highest score first; on a tie the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then(other.left.cmp(&self.left))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}

fn parse_byte_piece(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() == 2 { u8::from_str_radix(hex, 16).ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> SpmTokenizer {
        let mut pieces = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let words = [" ", "a", "b", "c", "ab", " ab", "abc", " c"];
        pieces.extend(words.iter().map(|s| s.to_string()));
        let mut scores = vec![0.0; pieces.len()];
        let n = pieces.len();
        scores[n - 4] = -1.0; // ab
        scores[n - 3] = -2.0; // " ab"
        scores[n - 2] = -3.0; // abc
        scores[n - 1] = -0.5; // " c"
        let control = (0..n).map(|i| i < 3).collect();
        SpmTokenizer::new(pieces, scores, control, ' ').unwrap()
    }

    /// The quadratic merge this replaces, kept as the reference.
    fn reference_merge(t: &SpmTokenizer, mut tokens: Vec<u32>) -> Vec<u32> {
        loop {
            let mut best: Option<(f32, usize, u32)> = None;
            for i in 0..tokens.len().saturating_sub(1) {
                let merged = format!("{}{}", t.pieces[tokens[i] as usize], t.pieces[tokens[i + 1] as usize]);
                if let Some(&id) = t.ids.get(&merged) {
                    let score = t.scores[id as usize];
                    if best.is_none_or(|(s, _, _)| score > s) {
                        best = Some((score, i, id));
                    }
                }
            }
            match best {
                Some((_, i, id)) => {
                    tokens[i] = id;
                    tokens.remove(i + 1);
                }
                None => return tokens,
            }
        }
    }

    #[test]
    fn heap_merge_equals_the_quadratic_greedy_merge() {
        let t = toy();
        let unit = |c: char| t.token_to_id(&c.to_string()).unwrap();
        let mut rng = 12345u64;
        for len in 0..60 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let text: Vec<u32> = (0..len).map(|k| unit(['a', 'b', 'c', ' '][((rng >> (k % 60)) & 3) as usize])).collect();
            assert_eq!(t.merge(text.clone()), reference_merge(&t, text));
        }
    }

    #[test]
    fn long_text_encodes_in_linear_time_and_bad_vocabularies_are_errors() {
        let t = toy();
        let text = "ab c ".repeat(200_000); // 1 MB: the quadratic merge took minutes
        let ids = t.encode(&text);
        assert!(ids.len() <= 400_001, "{}", ids.len()); // " ab", " c" per repeat
        assert_eq!(t.decode(&ids), text);
        assert!(SpmTokenizer::new(vec![], vec![], vec![], ' ').is_err());
        let err = SpmTokenizer::new(vec!["a".into(), "b".into()], vec![0.0], vec![false; 2], ' ').unwrap_err();
        assert!(err.to_string().contains("2 pieces but 1 scores"), "{err}");
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let t = toy();
        let ids = t.encode("ab");
        assert_eq!(t.id_to_token(ids[0]), Some(" ab"));
        assert_eq!(ids.len(), 1);
        let ids = t.encode("é");
        assert_eq!(ids.len(), 3, "space + two UTF-8 bytes"); // ' ' then 0xC3 0xA9
        assert_eq!(t.decode(&ids), "é");
        assert_eq!(t.decode(&t.encode("ab c")), "ab c");
    }
}

//! SentencePiece-style BPE over a scored vocabulary with byte fallback: llama2.c's `tokenizer.bin`
//! and GGUF's `llama` tokenizer model. Merges are not listed; the adjacent pair whose merged piece
//! has the highest score is merged first.

use std::collections::HashMap;

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
    pub fn new(pieces: Vec<String>, scores: Vec<f32>, control: Vec<bool>, space: char) -> Self {
        let ids = pieces.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect::<HashMap<_, _>>();
        let mut byte_ids = [0u32; 256];
        let mut all = true;
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            match ids.get(&format!("<0x{b:02X}>")) {
                Some(&id) => *slot = id,
                None => all = false,
            }
        }
        Self { pieces, scores, ids, byte_ids: all.then_some(byte_ids), space, add_dummy_prefix: true, control }
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
        // Greedy highest-score merge; quadratic but prompts are short and this is exact.
        loop {
            let mut best: Option<(f32, usize, u32)> = None;
            for i in 0..tokens.len().saturating_sub(1) {
                let merged = format!("{}{}", self.pieces[tokens[i] as usize], self.pieces[tokens[i + 1] as usize]);
                if let Some(&id) = self.ids.get(&merged) {
                    let score = self.scores[id as usize];
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
                None => break,
            }
        }
        tokens
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
        SpmTokenizer::new(pieces, scores, control, ' ')
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

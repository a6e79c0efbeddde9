//! Judges against independent references: VADER's compound scores as vaderSentiment 3.3.2
//! (Python) prints them for the same sentences, and the simple judges on hand-made cases.

use alignlab::judges::{JudgeData, JudgeSpec, Judges};

fn data() -> JudgeData {
    let dir = crate::common::root().join("models/judges");
    assert!(dir.join("vader_lexicon.txt").exists(), "{} is missing: run scripts/setup", dir.display());
    JudgeData::load(&dir).unwrap()
}

#[test]
fn vader_matches_vadersentiment() {
    // vaderSentiment 3.3.2: SentimentIntensityAnalyzer().polarity_scores(text)['compound']
    let cases = [
        ("I love this so much!", 0.6696),
        ("This is not good at all.", -0.3412),
        ("The movie was VERY GOOD, but the ending was terrible.", -0.3227),
        ("What a horrible, awful day...", -0.7579),
        ("It is a table.", 0.0),
        ("I am kind of happy", 0.5279),
        ("Never so happy in my life!!!", 0.7662),
        ("He is the least helpful person", -0.3252),
        ("Thanks, that was extremely helpful :)", 0.8508),
        ("No problem, I do not hate it", 0.6435),
        ("Is it bad??", -0.594),
        ("Without doubt the best", 0.7438),
    ];
    let d = data();
    let vader = d.vader.as_ref().unwrap();
    for (text, want) in cases {
        let got = vader.compound(text);
        assert!((got - want).abs() < 6e-5, "{text:?}: {got:.4} vs vaderSentiment {want}");
    }
}

#[test]
fn neutral_share_matches_vadersentiment() {
    // vaderSentiment 3.3.2: SentimentIntensityAnalyzer().polarity_scores(text)['neu'] (3 decimals)
    let cases = [
        ("I love this so much!", 0.471),
        ("This is not good at all.", 0.675),
        ("The movie was VERY GOOD, but the ending was terrible.", 0.534),
        ("What a horrible, awful day...", 0.316),
        ("It is a table.", 1.0),
        ("I am kind of happy", 0.54),
        ("Thanks, that was extremely helpful :)", 0.244),
        ("Is it bad??", 0.341),
        ("", 0.0),
        ("The train leaves at noon and arrives at three.", 1.0),
        ("I absolutely hate this awful, disgusting, horrible mess!", 0.146),
    ];
    let d = data();
    let vader = d.vader.as_ref().unwrap();
    for (text, want) in cases {
        let got = vader.neutral(text);
        assert!((got - want).abs() < 6e-4, "{text:?}: {got:.4} vs vaderSentiment {want}");
    }
    // The judge: +1 for a plain statement, below 0 for a gushing answer of either sign.
    let judges = Judges::new(vec![JudgeSpec::parse_weighted("neutral").unwrap()], &d).unwrap();
    assert_eq!(judges.score("The train leaves at noon and arrives at three."), 1.0);
    assert!(judges.score("I absolutely hate this awful, disgusting, horrible mess!") < -0.5);
    assert!(judges.score("Thanks, that was extremely helpful :)") < 0.0);
}

#[test]
fn judges_score_and_combine() {
    let d = data();
    let one = |spec: &str, text: &str| {
        let (j, w) = JudgeSpec::parse_weighted(spec).unwrap();
        Judges::new(vec![(j, w)], &d).unwrap().score(text)
    };
    assert!(one("politeness", "Could you please help? Thank you!") > one("politeness", "Do it now."));
    assert_eq!(one("profanity", "What a lovely day"), 0.0);
    assert_eq!(one("profanity", "what the fuck"), -1.0);
    assert_eq!(one("length=4", "one two three four"), 1.0);
    assert_eq!(one("length=4", "one two"), 0.0);
    assert_eq!(one("include=paris+france", "Paris is lovely"), 0.5);
    assert_eq!(one("avoid=berlin", "Berlin"), -1.0);
    assert_eq!(one("sentiment*2", "I love it"), 2.0 * d.vader.as_ref().unwrap().compound("I love it"));
    let both = Judges::new(
        vec![JudgeSpec::parse_weighted("sentiment").unwrap(), JudgeSpec::parse_weighted("length=3*0.5").unwrap()],
        &d,
    )
    .unwrap();
    let text = "I love it";
    assert!((both.score(text) - (d.vader.as_ref().unwrap().compound(text) + 0.5)).abs() < 1e-12);
    assert!(JudgeSpec::parse_weighted("kindness").unwrap_err().to_string().contains("unknown judge"));
}

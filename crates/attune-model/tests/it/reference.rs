//! Token ids and embeddings against `tests/fixtures/reference.json`, written by
//! `scripts/reference_embed.py` (ids from Hugging Face `tokenizers` reading tokenizer.json;
//! embeddings from an independent float64 numpy forward pass).

use serde::Deserialize;

use crate::{cosine, embedder};

#[derive(Deserialize)]
struct Fixture {
    max_tokens: usize,
    sentences: Vec<Sentence>,
    tokenization: Vec<Tokenization>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Tokenization {
    text: String,
    ids: Vec<u32>,
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn token_ids_match_tokenizer_json() {
    let fixture = fixture();
    let tokenizer = embedder().tokenizer();
    assert_eq!(tokenizer.max_len(), fixture.max_tokens);
    let cases = fixture.tokenization.iter().map(|t| (&t.text, &t.ids));
    let sentences = fixture.sentences.iter().map(|s| (&s.text, &s.ids));
    for (text, want) in cases.chain(sentences) {
        let encoding = tokenizer.encode(text);
        assert_eq!(&encoding.ids, want, "token ids of {text:?}");
        assert_eq!(encoding.attention_mask.len(), want.len());
    }
}

#[test]
fn embeddings_match_the_reference() {
    let fixture = fixture();
    let embedder = embedder();
    let texts: Vec<&str> = fixture.sentences.iter().map(|s| s.text.as_str()).collect();
    // All at once (padded, masked) and one by one (no padding): both must match.
    let batched = embedder.embed(&texts).unwrap();
    assert_eq!(batched.len(), texts.len());
    for (sentence, got) in fixture.sentences.iter().zip(&batched) {
        let alone = embedder.embed_one(&sentence.text).unwrap();
        assert_eq!(got.len(), 384);
        let norm = got
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "norm of {:?} is {norm}",
            sentence.text
        );
        for (what, v) in [("batched", got), ("alone", &alone)] {
            let cos = cosine(v, &sentence.embedding);
            assert!(
                cos > 0.9999,
                "{what} embedding of {:?}: cosine {cos} to the reference",
                sentence.text
            );
            let head_diff = v
                .iter()
                .zip(&sentence.embedding)
                .take(16)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                head_diff < 1e-4,
                "{what} embedding of {:?}: first 16 dims off by {head_diff}",
                sentence.text
            );
        }
    }
}

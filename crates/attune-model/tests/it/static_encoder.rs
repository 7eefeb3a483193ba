//! The static query encoder: distilled from the real model, in the model's own space.

use attune_model::Error;
use attune_model::static_encoder::StaticEncoder;

use crate::{cosine, embedder};

/// The ids of every token of `texts` (distilling the whole vocabulary would take too long here).
fn ids_of(texts: &[&str]) -> Vec<u32> {
    let mut ids: Vec<u32> = texts
        .iter()
        .flat_map(|t| embedder().tokenizer().encode(t).ids)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[test]
fn a_one_token_text_is_the_models_own_embedding_and_longer_ones_sum_their_tokens() {
    let e = embedder();
    let texts = ["shirt", "navy", "blue", "navy blue shirt"];
    let table = StaticEncoder::distill_ids(e, &ids_of(&texts), &mut |_, _| {}).unwrap();
    assert_eq!(table.dim(), e.dim());
    for word in ["shirt", "navy", "blue"] {
        let want = e.embed_one(word).unwrap();
        let got = table.embed(word);
        // The model's own vector, up to the rows' 8-bit rounding.
        assert!(cosine(&got, &want) > 0.9999, "{word}");
    }
    // The normalized sum of the tokens' (unnormalized) rows: the direction of navy + blue + shirt.
    let sum = table.embed("navy blue shirt");
    let norm: f64 = sum
        .iter()
        .map(|x| f64::from(*x).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    // An approximation of the model's embedding of the phrase, in the same space.
    let model = e.embed_one("navy blue shirt").unwrap();
    let c = cosine(&sum, &model);
    assert!(c > 0.7, "cosine with the model's own vector {c}");
    // Case and accents are the tokenizer's business: the same tokens, the same vector.
    assert!(cosine(&table.embed("NAVY Blue shirt"), &sum) > 0.99999);
    // A text with no tokens gets [CLS] [SEP]'s vector, as the model does.
    assert!(cosine(&table.embed(""), &e.embed_one("").unwrap()) > 0.99999);
}

#[test]
fn static_queries_find_the_items_the_model_embedded() {
    let e = embedder();
    let catalog = [
        "Oatly Oat Drink Barista Edition 1 L",
        "Flamin' Hot spicy tortilla chips",
        "navy blue men's shirt",
        "Crème Brûlée ice cream",
    ];
    let queries = [
        ("oat milk", 0),
        ("hot chips", 1),
        ("blue shirt", 2),
        ("ice cream", 3),
    ];
    let texts: Vec<&str> = queries.iter().map(|(q, _)| *q).collect();
    let table = StaticEncoder::distill_ids(e, &ids_of(&texts), &mut |_, _| {}).unwrap();
    let items = e.embed(&catalog).unwrap();
    for (query, want) in queries {
        let q = table.embed(query);
        let best = (0..items.len())
            .max_by(|&a, &b| cosine(&q, &items[a]).total_cmp(&cosine(&q, &items[b])))
            .unwrap();
        assert_eq!(catalog[best], catalog[want], "nearest item to {query:?}");
    }
}

#[test]
fn a_saved_table_reads_back_only_for_its_model() {
    let e = embedder();
    let table = StaticEncoder::distill_ids(e, &ids_of(&["shirt"]), &mut |_, _| {}).unwrap();
    let dir = std::env::temp_dir().join(format!("attune-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("table.bin");
    table.save(&path, "digest-a").unwrap();
    let back = StaticEncoder::load(&path, "digest-a", e.tokenizer())
        .unwrap()
        .expect("same digest");
    assert_eq!(back.embed("shirt"), table.embed("shirt"));
    assert_eq!(back.embed(""), table.embed(""));
    assert!(
        StaticEncoder::load(&path, "digest-b", e.tokenizer())
            .unwrap()
            .is_none(),
        "another model's table is not used"
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = StaticEncoder::load(&path, "digest-a", e.tokenizer()).unwrap_err();
    assert!(matches!(&err, Error::BadData { .. }), "{err:?}");
    std::fs::write(&path, b"something else entirely").unwrap();
    let err = StaticEncoder::load(&path, "digest-a", e.tokenizer()).unwrap_err();
    assert!(matches!(&err, Error::BadData { .. }), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

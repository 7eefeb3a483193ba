//! The embeddings mean something: related product texts are closer than unrelated ones.

use crate::{cosine, embedder};

#[test]
fn related_texts_are_closer() {
    let e = embedder();
    let v = e
        .embed(&[
            "oat milk",
            "plant-based dairy-free drink",
            "motorcycle helmet",
        ])
        .unwrap();
    let (related, unrelated) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(
        related > unrelated + 0.2,
        "related {related}, unrelated {unrelated}"
    );

    let catalog = [
        "Oatly Oat Drink Barista Edition 1 L",
        "Flamin' Hot spicy tortilla chips",
        "navy blue men's shirt",
        "Crème Brûlée ice cream",
    ];
    let items = e.embed(&catalog).unwrap();
    for (query, want) in [
        ("oat milk for coffee", 0),
        ("hot chips", 1),
        ("blue shirt", 2),
        ("vanilla dessert", 3),
    ] {
        let q = e.embed_one(query).unwrap();
        let best = (0..items.len())
            .max_by(|&a, &b| cosine(&q, &items[a]).total_cmp(&cosine(&q, &items[b])))
            .unwrap();
        assert_eq!(catalog[best], catalog[want], "nearest item to {query:?}");
    }
}

#[test]
fn order_batching_and_truncation_do_not_change_results() {
    let e = embedder();
    // (Kept small: the test profile runs candle unoptimized.)
    let texts: Vec<String> = (0..12)
        .map(|i| format!("item {i} {}", "organic ".repeat(i % 5)))
        .collect();
    let together = e.embed(&texts).unwrap();
    let small = e.clone().with_batch_size(5).embed(&texts).unwrap();
    for (i, (a, b)) in together.iter().zip(&small).enumerate() {
        assert!(cosine(a, b) > 0.99999, "text {i}");
    }
    for i in [0, 4, 11] {
        let alone = e.embed_one(&texts[i]).unwrap();
        assert!(cosine(&together[i], &alone) > 0.99999, "text {i} alone");
    }
    assert!(e.embed(&[] as &[&str]).unwrap().is_empty());

    // Past max_tokens the rest of a text is ignored; a longer limit sees it.
    let short = e.clone().with_max_tokens(8);
    assert_eq!(short.max_tokens(), 8);
    let cut = short
        .embed_one("word word word word word word word oat milk")
        .unwrap();
    let head = short.embed_one("word word word word word word").unwrap();
    assert!(cosine(&cut, &head) > 0.99999);
    assert!(
        cosine(
            &e.embed_one("word word word word word word word oat milk")
                .unwrap(),
            &cut
        ) < 0.9999
    );
    assert_eq!(e.clone().with_max_tokens(1000).max_tokens(), 512);
}

//! The tantivy schema of the keyword index and how an [`Item`] becomes one document.
//!
//! Two families of fields:
//! - analysed text for BM25: title, every category level, every attribute value with `en_stem`
//!   (simple tokenizer, lower case, English stemmer; `plant_based` tokenizes as `plant`, `base`),
//!   and the brand without stemming (a name: "Oatly" must not become "oat");
//! - `words`: the same text unstemmed in one field, for typos and prefixes, which are about what
//!   people type ("chocolatte" is one typo from "chocolate" but three from its stem "chocol");
//! - exact raw terms, indexed for filters and fast (columnar) for facets and ordering: brand,
//!   every category path prefix (`A`, `A > B`), every attribute as `key:value`, price, stock,
//!   creation time and the id.

use attune_core::Item;
use attune_core::item::{attribute_key, join_path};
use tantivy::TantivyDocument;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};

/// The tokenizer of the text fields (registered by tantivy when its `stemmer` feature is on).
pub(super) const TEXT_TOKENIZER: &str = "en_stem";
/// The tokenizer of `words`: the same without the stemmer.
pub(super) const WORDS_TOKENIZER: &str = "default";

/// Column names read by the collector.
pub(super) const ID: &str = "id";
pub(super) const BRAND_EXACT: &str = "brand_exact";
pub(super) const CATEGORY_EXACT: &str = "category_exact";
pub(super) const ATTRIBUTE_EXACT: &str = "attribute_exact";
pub(super) const PRICE: &str = "price";
pub(super) const IN_STOCK: &str = "in_stock";
pub(super) const CREATED_AT: &str = "created_at";

/// Whether a text field holds stems or words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stemmed {
    /// Stems (`en_stem`): "Shirts" is indexed as "shirt".
    Yes,
    /// Lower-cased words: brands are names, and stemming "Oatly" gives "oat".
    No,
}

/// Every field of the schema.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fields {
    pub(super) id: Field,
    pub(super) title: Field,
    pub(super) brand: Field,
    pub(super) category: Field,
    pub(super) attributes: Field,
    pub(super) words: Field,
    pub(super) brand_exact: Field,
    pub(super) category_exact: Field,
    pub(super) attribute_exact: Field,
    pub(super) price: Field,
    pub(super) in_stock: Field,
    pub(super) created_at: Field,
}

impl Fields {
    /// The analysed text fields with their BM25 boosts and whether they are stemmed.
    pub(super) fn text_fields(&self) -> [(Field, f32, Stemmed); 4] {
        [
            (self.title, 2.0, Stemmed::Yes),
            (self.brand, 1.5, Stemmed::No),
            (self.category, 1.0, Stemmed::Yes),
            (self.attributes, 1.0, Stemmed::Yes),
        ]
    }
}

/// The schema, and its fields. Opening an existing index compares its schema with this one.
pub(super) fn build() -> (Schema, Fields) {
    let mut b = Schema::builder();
    // Text: term frequencies and field norms for BM25; no positions (no phrase queries).
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TEXT_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    // Words: only which documents hold them (no frequencies, no norms).
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS_TOKENIZER)
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    );
    let name = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(WORDS_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let exact = STRING | FAST;
    let fields = Fields {
        id: b.add_text_field(ID, exact.clone()),
        title: b.add_text_field("title", text.clone()),
        brand: b.add_text_field("brand", name),
        category: b.add_text_field("category", text.clone()),
        attributes: b.add_text_field("attributes", text),
        words: b.add_text_field("words", words),
        brand_exact: b.add_text_field(BRAND_EXACT, exact.clone()),
        category_exact: b.add_text_field(CATEGORY_EXACT, exact.clone()),
        attribute_exact: b.add_text_field(ATTRIBUTE_EXACT, exact),
        // Range filters on the fast column; no inverted index needed.
        price: b.add_f64_field(PRICE, FAST),
        in_stock: b.add_bool_field(IN_STOCK, INDEXED | FAST),
        created_at: b.add_i64_field(CREATED_AT, FAST),
    };
    (b.build(), fields)
}

/// The document of one item.
pub(super) fn document(f: &Fields, item: &Item) -> TantivyDocument {
    let mut doc = TantivyDocument::new();
    doc.add_text(f.id, item.id.as_str());
    doc.add_text(f.title, &item.title);
    doc.add_text(f.words, &item.title);
    if let Some(brand) = &item.brand {
        doc.add_text(f.brand, brand);
        doc.add_text(f.words, brand);
        doc.add_text(f.brand_exact, brand);
    }
    for (depth, level) in item.category.iter().enumerate() {
        doc.add_text(f.category, level);
        doc.add_text(f.words, level);
        doc.add_text(f.category_exact, join_path(&item.category[..=depth]));
    }
    for (key, values) in &item.attributes {
        for value in values {
            doc.add_text(f.attributes, value);
            doc.add_text(f.words, value);
            doc.add_text(f.attribute_exact, attribute_key(key, value));
        }
    }
    if let Some(price) = item.price {
        doc.add_f64(f.price, price);
    }
    doc.add_bool(f.in_stock, item.in_stock);
    doc.add_i64(f.created_at, item.created_at.as_millis());
    doc
}

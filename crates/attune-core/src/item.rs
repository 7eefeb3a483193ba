//! Catalog items and the features an item lends to a visitor's affinities.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ItemId;
use crate::key::Key;
use crate::time::Timestamp;

/// Longest title, in bytes.
pub const MAX_TITLE_LEN: usize = 512;
/// Longest brand, category level, attribute key or attribute value, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Deepest category path.
pub const MAX_CATEGORY_DEPTH: usize = 8;
/// Most attribute keys on one item.
pub const MAX_ATTRIBUTES: usize = 32;
/// Most values under one attribute key.
pub const MAX_VALUES_PER_ATTRIBUTE: usize = 32;
/// The separator between category levels in a category path.
pub const CATEGORY_SEPARATOR: &str = " > ";
/// Names that cannot be attribute keys because filters and intents use them for item fields.
pub const RESERVED_KEYS: &[&str] = &[
    "id",
    "title",
    "brand",
    "category",
    "price",
    "in_stock",
    "created_at",
    "query",
];

/// One product (or article, or video) in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Unique id.
    pub id: ItemId,
    /// Display title.
    pub title: String,
    /// Brand, if the item has one.
    pub brand: Option<Arc<str>>,
    /// Category path from the root, e.g. `["Dairy", "Milk"]`.
    pub category: Vec<Arc<str>>,
    /// Free-form attributes: key to one or more values (`diet: [plant_based, organic]`).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Price, if known.
    pub price: Option<f64>,
    /// Whether the item can be bought now.
    pub in_stock: bool,
    /// When the item entered the catalog.
    pub created_at: Timestamp,
}

/// The affinity keys an item moves when a visitor interacts with it.
///
/// Computed once per catalog upsert; the strings are shared with every session that holds them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemFeatures {
    /// The brand, if any.
    pub brand: Option<Key>,
    /// Every level of the category path as a path prefix: `Dairy`, `Dairy > Milk`.
    pub categories: Vec<Key>,
    /// Every attribute value as `key:value`.
    pub attributes: Vec<Key>,
}

impl Item {
    /// Starts building an item (for tests, examples and importers).
    pub fn builder(id: &str, title: &str) -> ItemBuilder {
        ItemBuilder {
            id: id.to_owned(),
            title: title.to_owned(),
            brand: None,
            category: String::new(),
            attributes: BTreeMap::new(),
            price: None,
            in_stock: true,
            created_at: Timestamp::default(),
        }
    }

    /// The category path as one string, `Dairy > Milk`.
    pub fn category_path(&self) -> String {
        join_path(&self.category)
    }

    /// Checks every field against its limits.
    pub fn validate(&self) -> Result<()> {
        check_text("title", &self.title, MAX_TITLE_LEN)?;
        if let Some(brand) = &self.brand {
            check_text("brand", brand, MAX_NAME_LEN)?;
        }
        if self.category.len() > MAX_CATEGORY_DEPTH {
            return Err(Error::invalid(
                "category",
                format!(
                    "has {} levels; the limit is {MAX_CATEGORY_DEPTH}",
                    self.category.len()
                ),
            ));
        }
        for level in &self.category {
            check_text("category", level, MAX_NAME_LEN)?;
            if level.contains('>') {
                return Err(Error::invalid("category", "a level must not contain '>'"));
            }
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(Error::invalid(
                "attributes",
                format!(
                    "has {} keys; the limit is {MAX_ATTRIBUTES}",
                    self.attributes.len()
                ),
            ));
        }
        for (key, values) in &self.attributes {
            check_attribute_key(key).map_err(|e| e.within("attributes"))?;
            if values.is_empty() {
                return Err(Error::invalid(
                    format!("attributes.{key}"),
                    "must have at least one value",
                ));
            }
            if values.len() > MAX_VALUES_PER_ATTRIBUTE {
                return Err(Error::invalid(
                    format!("attributes.{key}"),
                    format!(
                        "has {} values; the limit is {MAX_VALUES_PER_ATTRIBUTE}",
                        values.len()
                    ),
                ));
            }
            for (i, v) in values.iter().enumerate() {
                check_text("value", v, MAX_NAME_LEN)
                    .map_err(|e| e.within(&format!("attributes.{key}")))?;
                if values[..i].contains(v) {
                    return Err(Error::invalid(
                        format!("attributes.{key}"),
                        format!("lists the value {v:?} twice"),
                    ));
                }
            }
        }
        if let Some(price) = self.price
            && !(price.is_finite() && (0.0..=1e12).contains(&price))
        {
            return Err(Error::invalid(
                "price",
                "must be a finite number between 0 and 1e12",
            ));
        }
        Ok(())
    }

    /// The affinity keys this item moves. See [`ItemFeatures`].
    pub fn features(&self) -> ItemFeatures {
        let mut categories = Vec::with_capacity(self.category.len());
        for depth in 1..=self.category.len() {
            categories.push(Key::from(join_path(&self.category[..depth])));
        }
        let attributes = self
            .attributes
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| Key::from(attribute_key(k, v))))
            .collect();
        ItemFeatures {
            brand: self.brand.as_deref().map(Key::new),
            categories,
            attributes,
        }
    }
}

/// The affinity key of one attribute value: `key:value`.
pub fn attribute_key(key: &str, value: &str) -> String {
    let mut s = String::with_capacity(key.len() + value.len() + 1);
    s.push_str(key);
    s.push(':');
    s.push_str(value);
    s
}

/// Joins category levels with [`CATEGORY_SEPARATOR`].
pub fn join_path<S: AsRef<str>>(levels: &[S]) -> String {
    let mut s = String::new();
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            s.push_str(CATEGORY_SEPARATOR);
        }
        s.push_str(l.as_ref());
    }
    s
}

/// Splits `Dairy > Milk` into its levels, trimming each; an empty path has no levels.
pub fn parse_category_path(path: &str) -> Result<Vec<Arc<str>>> {
    if path.trim().is_empty() {
        return Ok(Vec::new());
    }
    path.split('>')
        .map(|level| {
            let level = level.trim();
            if level.is_empty() {
                Err(Error::invalid("category", "has an empty level"))
            } else {
                Ok(Arc::from(level))
            }
        })
        .collect()
}

/// Checks an attribute key: 1 to 64 characters of `a-z`, `0-9` and `_`, not a reserved field name.
pub fn check_attribute_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 64 {
        return Err(Error::invalid(
            key.to_owned(),
            "an attribute key must be 1 to 64 characters long",
        ));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::invalid(
            key.to_owned(),
            "an attribute key may contain only a-z, 0-9 and _",
        ));
    }
    if RESERVED_KEYS.contains(&key) {
        return Err(Error::invalid(
            key.to_owned(),
            "is a reserved name and cannot be an attribute key",
        ));
    }
    Ok(())
}

fn check_text(field: &'static str, s: &str, max: usize) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::Empty {
            field: field.into(),
        });
    }
    if s.len() > max {
        return Err(Error::TooLong {
            field: field.into(),
            len: s.len(),
            max,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Builds an [`Item`]; see [`Item::builder`].
#[derive(Debug, Clone)]
pub struct ItemBuilder {
    id: String,
    title: String,
    brand: Option<String>,
    category: String,
    attributes: BTreeMap<String, Vec<String>>,
    price: Option<f64>,
    in_stock: bool,
    created_at: Timestamp,
}

impl ItemBuilder {
    /// Sets the brand.
    pub fn brand(mut self, brand: &str) -> Self {
        self.brand = Some(brand.to_owned());
        self
    }
    /// Sets the category path, `A > B > C`.
    pub fn category(mut self, path: &str) -> Self {
        path.clone_into(&mut self.category);
        self
    }
    /// Adds an attribute with its values.
    pub fn attribute<I, S>(mut self, key: &str, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.attributes
            .insert(key.to_owned(), values.into_iter().map(Into::into).collect());
        self
    }
    /// Sets the price.
    pub fn price(mut self, price: f64) -> Self {
        self.price = Some(price);
        self
    }
    /// Sets the stock flag.
    pub fn in_stock(mut self, in_stock: bool) -> Self {
        self.in_stock = in_stock;
        self
    }
    /// Sets the creation time.
    pub fn created_at(mut self, at: Timestamp) -> Self {
        self.created_at = at;
        self
    }
    /// Validates and builds the item.
    pub fn build(self) -> Result<Item> {
        let item = Item {
            id: ItemId::new(&self.id)?,
            title: self.title,
            brand: self.brand.map(Arc::from),
            category: parse_category_path(&self.category)?,
            attributes: self.attributes,
            price: self.price,
            in_stock: self.in_stock,
            created_at: self.created_at,
        };
        item.validate()?;
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milk() -> ItemBuilder {
        Item::builder("oat-1", "Oat Drink")
            .brand("Oatly")
            .category("Dairy & Alternatives > Milk")
            .attribute("diet", ["plant_based", "vegan"])
    }

    #[test]
    fn features_cover_every_category_level_and_attribute_value() {
        let f = milk().build().unwrap().features();
        assert_eq!(f.brand.as_deref(), Some("Oatly"));
        let cats: Vec<&str> = f.categories.iter().map(|c| &**c).collect();
        assert_eq!(
            cats,
            ["Dairy & Alternatives", "Dairy & Alternatives > Milk"]
        );
        let attrs: Vec<&str> = f.attributes.iter().map(|c| &**c).collect();
        assert_eq!(attrs, ["diet:plant_based", "diet:vegan"]);
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(ItemBuilder, &str)> = vec![
            (milk().price(f64::NAN), "price"),
            (milk().price(-1.0), "price"),
            (milk().category("A >  > B"), "category"),
            (milk().attribute("Color", ["x"]), "attributes.Color"),
            (milk().attribute("brand", ["x"]), "attributes.brand"),
            (
                milk().attribute("size", Vec::<String>::new()),
                "attributes.size",
            ),
            (milk().attribute("size", ["\u{7}"]), "attributes.size.value"),
            (Item::builder("x", " "), "title"),
            (milk().brand(&"b".repeat(200)), "brand"),
        ];
        for (builder, field) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn category_paths_round_trip() {
        let levels = parse_category_path(" A >B> C ").unwrap();
        assert_eq!(join_path(&levels), "A > B > C");
        assert!(parse_category_path("").unwrap().is_empty());
    }
}

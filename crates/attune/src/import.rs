//! `attune import`: turns an external catalog into Attune's catalog format (NDJSON of items, the
//! same shape `PUT /v1/items` takes), to a file or straight into a running server.
//!
//! Formats:
//! - `fashion`: the Myntra fashion catalog (`styles.csv`: id, gender, masterCategory, subCategory,
//!   articleType, baseColour, season, year, usage, productDisplayName). It has no brand column: the
//!   brand is the leading words of the display name, matched against the set of brands the file
//!   itself shows (the words before the gender word, "Peter England Men Party Blue Jeans", seen at
//!   least twice). Category is master > sub > article type; attributes are gender, color, season,
//!   usage and year. There are no prices.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use attune_server::dto::{AttributeValue, ItemDto};

/// Arguments of `attune import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The input format.
    #[arg(long, value_enum)]
    format: Format,
    /// The input file.
    input: PathBuf,
    /// Write NDJSON items here (`-` for standard output).
    #[arg(long, default_value = "-")]
    out: String,
}

/// Known input formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// Myntra fashion `styles.csv`.
    Fashion,
}

/// Words that end a brand in a fashion display name.
const GENDER_WORDS: &[&str] = &[
    "men", "women", "boys", "girls", "unisex", "kids", "men's", "women's",
];
/// The longest brand, in words.
const MAX_BRAND_WORDS: usize = 4;

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StyleRow {
    id: String,
    gender: String,
    master_category: String,
    sub_category: String,
    article_type: String,
    base_colour: String,
    season: String,
    year: String,
    usage: String,
    product_display_name: String,
}

/// The words of a display name before its gender word, if that comes early enough.
fn brand_candidate(name: &str) -> Option<String> {
    let words: Vec<&str> = name.split_whitespace().collect();
    let gender_at = words
        .iter()
        .position(|w| GENDER_WORDS.contains(&w.to_ascii_lowercase().as_str()))?;
    (1..=MAX_BRAND_WORDS)
        .contains(&gender_at)
        .then(|| words[..gender_at].join(" "))
}

/// The set of brands a list of display names shows at least `min_count` times.
pub(crate) fn known_brands<'a>(
    names: impl IntoIterator<Item = &'a str>,
    min_count: usize,
) -> Vec<String> {
    let mut counts: HashMap<String, (usize, String)> = HashMap::new();
    for name in names {
        if let Some(b) = brand_candidate(name) {
            let e = counts.entry(b.to_lowercase()).or_insert((0, b));
            e.0 += 1;
        }
    }
    let mut brands: Vec<String> = counts
        .into_values()
        .filter(|(n, _)| *n >= min_count)
        .map(|(_, b)| b)
        .collect();
    // Longest first, so "Peter England" wins over "Peter".
    brands.sort_by(|a, b| {
        b.split_whitespace()
            .count()
            .cmp(&a.split_whitespace().count())
            .then(a.cmp(b))
    });
    brands
}

/// The brand of a display name: its longest leading run of words that is a known brand.
pub(crate) fn match_brand<'a>(name: &str, brands: &'a [String]) -> Option<&'a str> {
    let lower = name.to_lowercase();
    brands.iter().map(String::as_str).find(|b| {
        let b = b.to_lowercase();
        lower.starts_with(&b)
            && lower[b.len()..]
                .chars()
                .next()
                .is_none_or(char::is_whitespace)
    })
}

/// `Navy Blue` → `navy_blue`.
fn value(s: &str) -> String {
    snake(s)
}

fn snake(s: &str) -> String {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// Reads `styles.csv` into items.
pub(crate) fn fashion_items(path: &std::path::Path) -> anyhow::Result<Vec<ItemDto>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize::<StyleRow>().enumerate() {
        let row = row.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        rows.push(row);
    }
    let brands = known_brands(rows.iter().map(|r| r.product_display_name.as_str()), 2);
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let title = r.product_display_name.trim();
        if title.is_empty() {
            continue;
        }
        let mut attributes = std::collections::BTreeMap::new();
        for (key, raw) in [
            ("gender", &r.gender),
            ("color", &r.base_colour),
            ("season", &r.season),
            ("usage", &r.usage),
            ("year", &r.year),
        ] {
            let v = value(raw);
            if !v.is_empty() && v != "na" {
                attributes.insert(key.to_owned(), AttributeValue::One(v));
            }
        }
        let levels: Vec<&str> = [&r.master_category, &r.sub_category, &r.article_type]
            .into_iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        let mut category: Vec<&str> = Vec::new();
        for l in levels {
            // Some rows repeat a level ("Watches > Watches"); keep the path meaningful.
            if category.last() != Some(&l) {
                category.push(l);
            }
        }
        let created_at = r
            .year
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|y| (1990..=2100).contains(y))
            .map(|y| format!("{y}-01-01T00:00:00Z"));
        items.push(ItemDto {
            id: format!("fashion-{}", r.id.trim()),
            title: title.to_owned(),
            brand: match_brand(title, &brands).map(str::to_owned),
            category: category.join(" > "),
            attributes,
            price: None,
            in_stock: true,
            created_at,
        });
    }
    Ok(items)
}

/// Runs the import.
pub(crate) fn run(args: ImportArgs) -> anyhow::Result<()> {
    let items = match args.format {
        Format::Fashion => fashion_items(&args.input)?,
    };
    let with_brand = items.iter().filter(|i| i.brand.is_some()).count();
    let mut out: Box<dyn Write> = if args.out == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out))?,
        ))
    };
    for item in &items {
        serde_json::to_writer(&mut out, item)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!(
        "imported {} items ({} with a brand) from {}",
        items.len(),
        with_brand,
        args.input.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brands_are_the_words_before_the_gender_word_seen_twice() {
        let names = [
            "Peter England Men Party Blue Jeans",
            "Peter England Men Black Shirt",
            "Titan Women Silver Watch",
            "Titan Men Black Watch",
            "Turtle Check Men Navy Blue Shirt",
            "Nike Shoes Running",
        ];
        let brands = known_brands(names, 2);
        assert_eq!(brands, ["Peter England", "Titan"]);
        assert_eq!(
            match_brand("Peter England Unisex Socks", &brands),
            Some("Peter England")
        );
        assert_eq!(
            match_brand("Titanic Men Tee", &brands),
            None,
            "word boundary"
        );
        assert_eq!(
            match_brand("Turtle Check Men Navy Blue Shirt", &brands),
            None,
            "seen once"
        );
        assert_eq!(snake("Navy Blue"), "navy_blue");
    }

    #[test]
    fn the_real_fashion_catalog_imports_whole_with_brands() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/fashion-catalog/styles.csv");
        let items = fashion_items(&path).expect("the shared data is beside the checkout");
        assert!(items.len() > 44_000, "{}", items.len());
        let branded = items.iter().filter(|i| i.brand.is_some()).count();
        assert!(
            branded * 10 > items.len() * 8,
            "most names yield a brand: {branded}"
        );
        let first = items.iter().find(|i| i.id == "fashion-39386").unwrap();
        assert_eq!(first.brand.as_deref(), Some("Peter England"));
        assert_eq!(first.category, "Apparel > Bottomwear > Jeans");
        let now = attune_core::Timestamp::from_millis(0);
        for item in items {
            item.into_item(now).expect("every imported item is valid");
        }
    }
}

//! `attune import`: turns an external catalog into Attune's catalog format (NDJSON of items, the
//! same shape `PUT /v1/items` takes), to a file or standard output; a PostgreSQL source also
//! straight into a running server, incrementally.
//!
//! Formats:
//! - `postgres`: a shop's own table or query ([`postgres`]): columns named like an item's fields
//!   are those fields, every other column an attribute ([`columns`]); rows are read in
//!   `(updated_at, id)` order after a saved cursor ([`cursor`]) and sent in batches ([`sink`]).
//! - `fashion`: the Myntra fashion catalog (`styles.csv`: id, gender, masterCategory, subCategory,
//!   articleType, baseColour, season, year, usage, productDisplayName). It has no brand column: the
//!   brand is the leading words of the display name, matched against the set of brands the file
//!   itself shows (the words before the gender word, "Peter England Men Party Blue Jeans", seen at
//!   least twice). Category is master > sub > article type; attributes are gender, color, season,
//!   usage and year. There are no prices.
//! - `diginetica`: the items of the DIGINETICA benchmark as SR-GNN split it (the `diginetica`
//!   folder: `train_sessions.txt`, `test.tsv`), 43,097 of them. The benchmark's ids join nothing
//!   (not even `raw/`), so each item is bare: id, the title `Item <id>`, in stock.
//! - `beauty`: the items of amazon-beauty (the `amazon-beauty` folder), 12,101 of them, with the
//!   brand and category path of `items.tsv`, titled by brand, leaf category and ASIN. The S3-Rec
//!   attribute terms (`item2attributes.json`) are left out: every one of them is the item's brand
//!   or a level of its category path, so as attributes they would count the same signal twice.
//!
//! The benchmark formats name items exactly as the model toolchain does: the id of item index `i`
//! is `Dataset::item_ids[i - 1]` of the dataset's loader (`"1"` … `"43097"`, `"1"` … `"12101"`),
//! which `attune train` writes into every manifest, so a model trained with `attune train
//! --dataset diginetica` (or `amazon-beauty`) loads against the imported catalog.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use attune_model::data::{amazon, beauty, diginetica};
use attune_server::dto::{AttributeValue, ItemDto};

mod columns;
mod cursor;
mod postgres;
mod sink;

/// Arguments of `attune import`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = postgres::MAPPING_HELP)]
pub(crate) struct ImportArgs {
    /// The input format.
    #[arg(long, value_enum)]
    format: Format,
    /// The input: `styles.csv` for `fashion`; the dataset's folder for `diginetica` and `beauty`
    /// (`../shared/data/diginetica`, `../shared/data/amazon-beauty`; a file inside it names its
    /// folder). None for `postgres` (see --url).
    input: Option<PathBuf>,
    /// Write NDJSON items here (`-` for standard output, the default). With `postgres` and
    /// `--state`, each run's changes are appended to the file.
    #[arg(long, value_name = "FILE")]
    out: Option<String>,
    #[command(flatten)]
    postgres: postgres::PostgresArgs,
}

/// Known input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Myntra fashion `styles.csv`.
    Fashion,
    /// The DIGINETICA benchmark's items (SR-GNN split), ids as the model toolchain names them.
    Diginetica,
    /// amazon-beauty's items with brand and category path, ids as the model toolchain names them.
    Beauty,
    /// A PostgreSQL table or query (`--url`, `--table` or `--query`, `--updated-at`), synced
    /// incrementally.
    Postgres,
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

/// The folder of a dataset given as the folder or a file inside it.
fn dataset_dir(input: &Path) -> &Path {
    if input.is_file() {
        input.parent().unwrap_or(Path::new("."))
    } else {
        input
    }
}

/// A bare item: the id, a title naming it, in stock, nothing else.
fn bare_item(id: &str) -> ItemDto {
    ItemDto {
        id: id.to_owned(),
        title: format!("Item {id}"),
        brand: None,
        category: String::new(),
        attributes: std::collections::BTreeMap::new(),
        price: None,
        in_stock: true,
        created_at: None,
    }
}

/// The DIGINETICA items, one per id of the loader's `item_ids`, bare.
pub(crate) fn diginetica_items(input: &Path) -> anyhow::Result<Vec<ItemDto>> {
    let data = diginetica::load(dataset_dir(input))?;
    Ok(data.item_ids.iter().map(|id| bare_item(id)).collect())
}

/// The amazon-beauty items, one per id of the loader's `item_ids`, with the brand and category
/// path of `items.tsv`.
pub(crate) fn beauty_items(input: &Path) -> anyhow::Result<Vec<ItemDto>> {
    let dir = dataset_dir(input);
    let data = amazon::load_beauty(dir)?;
    let features = beauty::load(dir)?;
    let items = data
        .item_ids
        .iter()
        .enumerate()
        .map(|(i, id)| match features.items.get(i) {
            Some(f) => {
                let mut words: Vec<&str> = f.brand.iter().map(String::as_str).collect();
                words.extend(f.categories.last().map(String::as_str));
                if !f.asin.is_empty() {
                    words.push(&f.asin);
                }
                let mut item = bare_item(id);
                if !words.is_empty() {
                    item.title = words.join(" ");
                }
                item.brand = f.brand.clone();
                item.category = f.categories.join(attune_core::item::CATEGORY_SEPARATOR);
                item
            }
            None => bare_item(id),
        })
        .collect();
    Ok(items)
}

/// Runs the import.
pub(crate) fn run(args: ImportArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    if args.format == Format::Postgres {
        if let Some(input) = &args.input {
            bail!(
                "--format postgres reads no input file ({}); give --url and --table or --query",
                input.display()
            );
        }
        return postgres::run(args.postgres, args.out, runtime);
    }
    let given = args.postgres.given();
    if !given.is_empty() {
        bail!("{}: only with --format postgres", given.join(", "));
    }
    let Some(input) = args.input else {
        let name = format!("{:?}", args.format).to_lowercase();
        bail!("--format {name} needs an INPUT (a file or folder)");
    };
    let items = match args.format {
        Format::Fashion => fashion_items(&input)?,
        Format::Diginetica => diginetica_items(&input)?,
        Format::Beauty => beauty_items(&input)?,
        Format::Postgres => unreachable!("handled above"),
    };
    let with_brand = items.iter().filter(|i| i.brand.is_some()).count();
    let out_name = args.out.unwrap_or_else(|| "-".to_owned());
    let mut out: Box<dyn Write> = if out_name == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&out_name).with_context(|| format!("creating {out_name}"))?,
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
        input.display()
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

    fn data(folder: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data")
            .join(folder)
    }

    #[test]
    fn the_diginetica_catalog_has_the_loaders_ids_as_bare_valid_items() {
        let dir = data("diginetica");
        let items = diginetica_items(&dir).expect("the shared data is beside the checkout");
        let loaded = diginetica::load(&dir).unwrap();
        assert_eq!(items.len(), 43_097);
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids, loaded.item_ids,
            "ids are the manifests' ids, in index order"
        );
        assert_eq!(ids[0], "1");
        assert_eq!(items[1233].title, "Item 1234");
        assert!(items.iter().all(|i| i.brand.is_none() && i.in_stock));
        // A file inside the folder names the folder.
        let via_file = diginetica_items(&dir.join("test.tsv")).unwrap();
        assert_eq!(via_file.len(), items.len());
        let now = attune_core::Timestamp::from_millis(0);
        for item in items {
            item.into_item(now).expect("every imported item is valid");
        }
    }

    #[test]
    fn the_beauty_catalog_has_the_loaders_ids_with_brands_and_categories() {
        let dir = data("amazon-beauty");
        let items = beauty_items(&dir).expect("the shared data is beside the checkout");
        let loaded = amazon::load_beauty(&dir).unwrap();
        assert_eq!(items.len(), 12_101);
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids, loaded.item_ids,
            "ids are the manifests' ids, in index order"
        );
        // items.tsv: `1  B004756YJA  OPI  Makeup > Nails > Nail Polish`.
        let first = &items[0];
        assert_eq!(first.id, "1");
        assert_eq!(first.brand.as_deref(), Some("OPI"));
        assert_eq!(first.category, "Makeup > Nails > Nail Polish");
        assert_eq!(first.title, "OPI Nail Polish B004756YJA");
        assert!(first.attributes.is_empty());
        let branded = items.iter().filter(|i| i.brand.is_some()).count();
        assert_eq!(
            branded,
            12_101 - 4_627,
            "the README's count of items without a brand"
        );
        assert!(items.iter().all(|i| !i.category.is_empty()));
        let now = attune_core::Timestamp::from_millis(0);
        for item in items {
            item.into_item(now).expect("every imported item is valid");
        }
    }
}

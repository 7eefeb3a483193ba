//! The fashion catalog (44,446 products, `../shared/data`) as items, for the benches that need a
//! real catalog.

use std::path::Path;

use attune_core::Item;

/// The fashion catalog as items (brand: the name's first word; attributes from the columns).
pub(crate) fn fashion_items() -> Vec<Item> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/fashion-catalog/styles.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the shared data sits beside the repo)",
            path.display()
        )
    });
    let mut items = Vec::new();
    for line in text.lines().skip(1) {
        // id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,name;
        // only the name may be quoted (and contain commas).
        let cols: Vec<&str> = line.splitn(10, ',').collect();
        if cols.len() < 10 {
            continue;
        }
        let name = cols[9].trim().trim_matches('"').replace("\"\"", "\"");
        if name.trim().is_empty() {
            continue;
        }
        let category: Vec<&str> = cols[2..5]
            .iter()
            .copied()
            .filter(|c| !c.is_empty())
            .collect();
        let mut b = Item::builder(cols[0], &name)
            .brand(name.split_whitespace().next().unwrap_or("Unknown"))
            .category(&category.join(" > "));
        for (key, col) in [
            ("gender", 1),
            ("colour", 5),
            ("season", 6),
            ("year", 7),
            ("usage", 8),
        ] {
            if !cols[col].trim().is_empty() {
                b = b.attribute(key, [cols[col].trim()]);
            }
        }
        if let Ok(item) = b.build() {
            items.push(item);
        }
    }
    items
}

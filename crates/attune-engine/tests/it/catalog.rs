//! The `Catalog` seam's conformance suite: every backend passes the same tests (the in-memory
//! catalog today; a PostgreSQL-backed one later runs them too).

use std::sync::Arc;

use attune_core::{Item, SearchFilters, Timestamp};
use attune_engine::{Catalog, MemoryCatalog};

fn item(id: &str, brand: &str, category: &str, colour: &str) -> Item {
    Item::builder(id, &format!("{brand} {id}"))
        .brand(brand)
        .category(category)
        .attribute("colour", [colour])
        .created_at(Timestamp::from_millis(0))
        .build()
        .expect("valid item")
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            fn catalog() -> Arc<dyn Catalog> {
                $make
            }

            #[test]
            fn upsert_counts_new_and_replaced_and_the_last_copy_wins() {
                let c = catalog();
                let o = c
                    .upsert(vec![
                        item("a", "Acme", "Shirts > Casual", "navy"),
                        item("b", "Acme", "Shirts", "red"),
                    ])
                    .unwrap();
                assert_eq!((o.inserted, o.updated), (2, 0));
                let o = c
                    .upsert(vec![
                        item("b", "Zeta", "Shirts", "red"),
                        item("c", "Zeta", "Shoes", "navy"),
                        item("c", "Zeta", "Shoes", "black"),
                    ])
                    .unwrap();
                assert_eq!((o.inserted, o.updated), (1, 1));
                assert_eq!(c.len(), 3);
                assert_eq!(c.get("b").unwrap().item.brand.as_deref(), Some("Zeta"));
                assert_eq!(
                    c.get("c").unwrap().item.attributes["colour"],
                    vec!["black".to_string()]
                );
            }

            #[test]
            fn near_duplicate_keys_are_equal_exactly_for_equal_brand_and_title() {
                let c = catalog();
                let titled = |id: &str, title: &str, brand: &str| {
                    Item::builder(id, title)
                        .brand(brand)
                        .build()
                        .expect("valid item")
                };
                c.upsert(vec![
                    titled("a", "Oat Drink 1 L", "Oatly"),
                    titled("b", "OAT DRINK - 1 L", "Oatly"),
                    titled("c", "Oat Drink 1 L", "Other"),
                    titled("d", "Soy Drink", "Oatly"),
                ])
                .unwrap();
                let key = |id: &str| c.get(id).unwrap().duplicate;
                assert_eq!(key("a"), key("b"));
                assert_ne!(key("a"), key("c"));
                assert_ne!(key("a"), key("d"));
                // Renamed, an item leaves its group; a key whose last item went is not reused.
                let soy = key("d");
                c.upsert(vec![titled("d", "Oat Drink 1L", "Oatly")])
                    .unwrap();
                assert_ne!(key("d"), key("a"));
                c.upsert(vec![titled("e", "Rice Drink", "Oatly")]).unwrap();
                assert_ne!(key("e"), soy);
                c.upsert(vec![titled("f", "soy drink", "Oatly")]).unwrap();
                assert_ne!(key("f"), soy);
                assert!(c.delete("b").unwrap());
                c.upsert(vec![titled("g", "Oat drink 1 l", "Oatly")])
                    .unwrap();
                assert_eq!(key("g"), key("a"));
            }

            #[test]
            fn reads_in_order_and_pages() {
                let c = catalog();
                c.upsert(vec![
                    item("c", "Acme", "Shirts", "navy"),
                    item("a", "Acme", "Shirts", "navy"),
                    item("b", "Acme", "Shirts", "navy"),
                ])
                .unwrap();
                let got = c.get_many(&["b", "zz", "a"]);
                assert_eq!(got[0].as_ref().unwrap().item.id.as_str(), "b");
                assert!(got[1].is_none());
                assert_eq!(got[2].as_ref().unwrap().item.id.as_str(), "a");
                let (page, total) = c.list(1, 5);
                assert_eq!(total, 3);
                let ids: Vec<&str> = page.iter().map(|x| x.item.id.as_str()).collect();
                assert_eq!(ids, ["b", "c"]);
                let all: Vec<String> = c.all().iter().map(|x| x.item.id.to_string()).collect();
                assert_eq!(all, ["a", "b", "c"]);
            }

            #[test]
            fn deleting_forgets_the_item_and_its_keys() {
                let c = catalog();
                c.upsert(vec![item("a", "Acme", "Shirts", "navy")]).unwrap();
                assert!(c.has_attribute_key("colour"));
                assert!(c.delete("a").unwrap());
                assert!(!c.delete("a").unwrap());
                assert!(c.get("a").is_none());
                assert!(!c.has_attribute_key("colour"));
                assert!(c.is_empty());
            }

            #[test]
            fn feature_keys_are_shared_and_numbered_consistently() {
                let c = catalog();
                c.upsert(vec![
                    item("a", "Acme", "Shirts > Casual", "navy"),
                    item("b", "Acme", "Shirts", "red"),
                ])
                .unwrap();
                let a = c.get("a").unwrap();
                let b = c.get("b").unwrap();
                // The brand is the first feature of both, with the same id.
                assert_eq!(a.feature_ids[0], b.feature_ids[0]);
                assert!(c.feature_key("Shirts > Casual").is_some());
                assert!(c.feature_key("colour:navy").is_some());
                assert!(c.feature_key("colour:green").is_none());
                let known = c.with_ids(|ids| ids.get("Acme").is_some());
                assert!(known);
            }

            #[test]
            fn search_intents_come_from_filters_and_known_terms() {
                let c = catalog();
                c.upsert(vec![item("a", "Acme", "Shirts", "navy")]).unwrap();
                let intents = c.search_intents("navy shirts", &SearchFilters::default());
                let keys: Vec<&str> = intents.iter().map(|k| k.as_str()).collect();
                assert!(keys.contains(&"colour:navy"), "{keys:?}");
                assert!(keys.iter().any(|k| k.contains("Shirts")), "{keys:?}");
            }
        }
    };
}

conformance!(memory, Arc::new(MemoryCatalog::new()));

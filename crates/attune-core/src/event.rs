//! Behavioural events: what a visitor did, to which item, when.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ItemId, SessionId, UserId};
use crate::item::{MAX_NAME_LEN, check_attribute_key};
use crate::time::Timestamp;

/// The largest quantity one event may carry.
pub const MAX_QUANTITY: u32 = 10_000;
/// The longest search query, in bytes.
pub const MAX_QUERY_LEN: usize = 512;
/// The most filter keys (brand, category and attribute keys together) on one search.
pub const MAX_FILTER_KEYS: usize = 32;
/// The most values under one filter key.
pub const MAX_FILTER_VALUES: usize = 32;

/// The longest `event_id` accepted, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 128;

/// What the visitor did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Opened an item's page.
    View,
    /// Clicked an item in a list.
    Click,
    /// Put an item in the cart.
    AddToCart,
    /// Took an item out of the cart.
    RemoveFromCart,
    /// Bought an item.
    Purchase,
    /// Saved an item for later.
    Wishlist,
    /// Clicked an item that Attune recommended.
    RecommendationClick,
    /// Was shown an item and scrolled past it.
    Skip,
    /// Searched, with a query and filters.
    Search,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 9] = [
        EventKind::View,
        EventKind::Click,
        EventKind::AddToCart,
        EventKind::RemoveFromCart,
        EventKind::Purchase,
        EventKind::Wishlist,
        EventKind::RecommendationClick,
        EventKind::Skip,
        EventKind::Search,
    ];

    /// Every kind that names an item (all but `search`).
    pub const ITEM_KINDS: [EventKind; 8] = [
        EventKind::View,
        EventKind::Click,
        EventKind::AddToCart,
        EventKind::RemoveFromCart,
        EventKind::Purchase,
        EventKind::Wishlist,
        EventKind::RecommendationClick,
        EventKind::Skip,
    ];

    /// The wire name, `add_to_cart`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Click => "click",
            EventKind::AddToCart => "add_to_cart",
            EventKind::RemoveFromCart => "remove_from_cart",
            EventKind::Purchase => "purchase",
            EventKind::Wishlist => "wishlist",
            EventKind::RecommendationClick => "recommendation_click",
            EventKind::Skip => "skip",
            EventKind::Search => "search",
        }
    }

    /// Whether this kind names an item (every kind but `search`).
    pub const fn needs_item(self) -> bool {
        !matches!(self, EventKind::Search)
    }

    /// Whether this kind means the visitor has seen the item (engaged with it, not just scrolled past).
    pub const fn marks_seen(self) -> bool {
        !matches!(self, EventKind::Skip | EventKind::Search)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The filters of a search: item fields and attribute keys to the values wanted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchFilters {
    /// Wanted brands (any of).
    pub brand: Vec<String>,
    /// Wanted categories, each a path or path prefix (any of).
    pub category: Vec<String>,
    /// Attribute key to wanted values (any of, per key).
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Lowest price.
    pub price_min: Option<f64>,
    /// Highest price.
    pub price_max: Option<f64>,
    /// Only items in (or out of) stock.
    pub in_stock: Option<bool>,
}

impl SearchFilters {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.brand.is_empty()
            && self.category.is_empty()
            && self.attributes.is_empty()
            && self.price_min.is_none()
            && self.price_max.is_none()
            && self.in_stock.is_none()
    }

    /// Whether an item passes every filter (all keys must hold; any value within a key). A category
    /// filter matches the item's path or any prefix of it; a price filter fails items without a
    /// price.
    pub fn matches(&self, item: &crate::item::Item) -> bool {
        if !self.brand.is_empty()
            && !item
                .brand
                .as_deref()
                .is_some_and(|b| self.brand.iter().any(|f| f == b))
        {
            return false;
        }
        if !self.category.is_empty() {
            let path = item.category_path();
            let under = |f: &String| {
                path == *f
                    || path
                        .strip_prefix(f.as_str())
                        .is_some_and(|rest| rest.starts_with(crate::item::CATEGORY_SEPARATOR))
            };
            if !self.category.iter().any(under) {
                return false;
            }
        }
        for (key, wanted) in &self.attributes {
            let Some(values) = item.attributes.get(key) else {
                return false;
            };
            if !wanted.iter().any(|w| values.contains(w)) {
                return false;
            }
        }
        if self.price_min.is_some() || self.price_max.is_some() {
            let Some(price) = item.price else {
                return false;
            };
            if self.price_min.is_some_and(|lo| price < lo)
                || self.price_max.is_some_and(|hi| price > hi)
            {
                return false;
            }
        }
        if let Some(in_stock) = self.in_stock
            && item.in_stock != in_stock
        {
            return false;
        }
        true
    }

    /// Checks keys, value counts and lengths, and the price range.
    pub fn validate(&self) -> Result<()> {
        let keys = usize::from(!self.brand.is_empty())
            + usize::from(!self.category.is_empty())
            + self.attributes.len();
        if keys > MAX_FILTER_KEYS {
            return Err(Error::invalid(
                "filters",
                format!("has {keys} keys; the limit is {MAX_FILTER_KEYS}"),
            ));
        }
        check_values("filters.brand", &self.brand)?;
        check_values("filters.category", &self.category)?;
        for (key, values) in &self.attributes {
            check_attribute_key(key).map_err(|e| e.within("filters"))?;
            check_values(&format!("filters.{key}"), values)?;
        }
        for (field, v) in [
            ("filters.price.min", self.price_min),
            ("filters.price.max", self.price_max),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(Error::invalid(field, "must be a finite number >= 0"));
            }
        }
        if let (Some(lo), Some(hi)) = (self.price_min, self.price_max)
            && lo > hi
        {
            return Err(Error::invalid("filters.price", "min must not exceed max"));
        }
        Ok(())
    }
}

fn check_values(field: &str, values: &[String]) -> Result<()> {
    if values.len() > MAX_FILTER_VALUES {
        return Err(Error::invalid(
            field.to_owned(),
            format!(
                "has {} values; the limit is {MAX_FILTER_VALUES}",
                values.len()
            ),
        ));
    }
    for v in values {
        if v.trim().is_empty() {
            return Err(Error::Empty {
                field: field.to_owned().into(),
            });
        }
        if v.len() > MAX_NAME_LEN {
            return Err(Error::TooLong {
                field: field.to_owned().into(),
                len: v.len(),
                max: MAX_NAME_LEN,
            });
        }
    }
    Ok(())
}

/// A search as an event: the query text and the filters the visitor chose.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchRequestEvent {
    /// The query text (may be empty when filters are set).
    pub query: String,
    /// The filters.
    pub filters: SearchFilters,
}

/// One thing one visitor did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What was done.
    pub kind: EventKind,
    /// Whose session.
    pub session_id: SessionId,
    /// The signed-in user, if any.
    pub user_id: Option<UserId>,
    /// The item, for every kind but `search`.
    pub item_id: Option<ItemId>,
    /// How many units (cart and purchase events); 1 otherwise.
    pub quantity: u32,
    /// When it happened.
    pub timestamp: Timestamp,
    /// The search, for `search` events.
    pub search: Option<SearchRequestEvent>,
    /// The client's id for this event (1 to 128 visible ASCII characters), making its
    /// application idempotent: an event whose id the session (or profile) already applied is
    /// skipped, so a retried batch counts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Box<str>>,
}

impl Event {
    /// An event about an item, quantity 1.
    pub fn item(kind: EventKind, session_id: SessionId, item_id: ItemId, at: Timestamp) -> Self {
        Event {
            kind,
            session_id,
            user_id: None,
            item_id: Some(item_id),
            quantity: 1,
            timestamp: at,
            search: None,
            event_id: None,
        }
    }

    /// A search event.
    pub fn search(session_id: SessionId, search: SearchRequestEvent, at: Timestamp) -> Self {
        Event {
            kind: EventKind::Search,
            session_id,
            user_id: None,
            item_id: None,
            quantity: 1,
            timestamp: at,
            search: Some(search),
            event_id: None,
        }
    }

    /// Checks that the fields fit the kind: item events name an item, searches carry a query or a
    /// filter, quantities are between 1 and [`MAX_QUANTITY`].
    pub fn validate(&self) -> Result<()> {
        if let Some(id) = &self.event_id
            && (!(1..=MAX_EVENT_ID_LEN).contains(&id.len())
                || !id.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(Error::invalid(
                "event_id",
                format!("must be 1 to {MAX_EVENT_ID_LEN} visible ASCII characters"),
            ));
        }
        if self.kind.needs_item() && self.item_id.is_none() {
            return Err(Error::invalid(
                "item_id",
                format!("is required for {} events", self.kind),
            ));
        }
        if self.quantity == 0 || self.quantity > MAX_QUANTITY {
            return Err(Error::invalid(
                "quantity",
                format!("must be a whole number from 1 to {MAX_QUANTITY}"),
            ));
        }
        if self.kind == EventKind::Search {
            let Some(search) = &self.search else {
                return Err(Error::invalid(
                    "query",
                    "a search event needs a query or filters",
                ));
            };
            if search.query.len() > MAX_QUERY_LEN {
                return Err(Error::TooLong {
                    field: "query".into(),
                    len: search.query.len(),
                    max: MAX_QUERY_LEN,
                });
            }
            if search.query.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "query",
                    "must not contain control characters",
                ));
            }
            if search.query.trim().is_empty() && search.filters.is_empty() {
                return Err(Error::invalid(
                    "query",
                    "a search event needs a query or filters",
                ));
            }
            search.filters.validate()?;
        } else if self.search.is_some() {
            return Err(Error::invalid(
                "query",
                format!(
                    "only search events carry a query or filters, not {}",
                    self.kind
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid() -> SessionId {
        SessionId::new("s").unwrap()
    }

    #[test]
    fn validation_names_the_field() {
        let at = Timestamp::from_millis(0);
        let mut no_item = Event::item(EventKind::Click, sid(), ItemId::new("i").unwrap(), at);
        no_item.item_id = None;
        let mut zero = Event::item(EventKind::Purchase, sid(), ItemId::new("i").unwrap(), at);
        zero.quantity = 0;
        let empty_search = Event::search(sid(), SearchRequestEvent::default(), at);
        let mut bad_price = SearchRequestEvent {
            query: "milk".into(),
            ..Default::default()
        };
        bad_price.filters.price_min = Some(5.0);
        bad_price.filters.price_max = Some(1.0);
        let bad_price = Event::search(sid(), bad_price, at);
        let mut bad_key = SearchRequestEvent::default();
        bad_key
            .filters
            .attributes
            .insert("Bad Key".into(), vec!["x".into()]);
        let bad_key = Event::search(sid(), bad_key, at);
        for (event, field) in [
            (no_item, "item_id"),
            (zero, "quantity"),
            (empty_search, "query"),
            (bad_price, "filters.price"),
            (bad_key, "filters.Bad Key"),
        ] {
            assert_eq!(event.validate().unwrap_err().field(), field);
        }
    }

    #[test]
    fn filters_match_items() {
        let item = crate::item::Item::builder("x", "Navy Shirt")
            .brand("Peter England")
            .category("Apparel > Topwear > Shirts")
            .attribute("color", ["navy_blue"])
            .price(20.0)
            .build()
            .unwrap();
        let f = |edit: &dyn Fn(&mut SearchFilters)| {
            let mut f = SearchFilters::default();
            edit(&mut f);
            f.matches(&item)
        };
        assert!(f(&|_| {}));
        assert!(f(&|f| f.brand = vec!["Nike".into(), "Peter England".into()]));
        assert!(!f(&|f| f.brand = vec!["Nike".into()]));
        assert!(f(&|f| f.category = vec!["Apparel".into()]));
        assert!(f(&|f| f.category = vec!["Apparel > Topwear".into()]));
        assert!(!f(&|f| f.category = vec!["Appar".into()]));
        assert!(f(&|f| {
            f.attributes
                .insert("color".into(), vec!["navy_blue".into()]);
        }));
        assert!(!f(&|f| {
            f.attributes.insert("size".into(), vec!["m".into()]);
        }));
        assert!(f(&|f| f.price_max = Some(20.0)));
        assert!(!f(&|f| f.price_min = Some(20.01)));
        assert!(!f(&|f| f.in_stock = Some(false)));
    }

    #[test]
    fn item_kinds_are_every_kind_that_needs_an_item() {
        let needing: Vec<EventKind> = EventKind::ALL
            .into_iter()
            .filter(|k| k.needs_item())
            .collect();
        assert_eq!(needing, EventKind::ITEM_KINDS);
    }

    #[test]
    fn wire_names_round_trip() {
        for kind in EventKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), kind);
        }
    }
}

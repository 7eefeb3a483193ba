//! Wire types of the HTTP API and their conversion to and from domain types.
//!
//! These are the contract (`openapi.json`); domain types can change shape without changing them.

use std::collections::BTreeMap;
use std::sync::Arc;

use attune_core::event::{MAX_QUANTITY, SearchFilters, SearchRequestEvent};
use attune_core::item::parse_category_path;
use attune_core::session::{ItemSummary, Reason, Scored, Scores};
use attune_core::{AffinityKind, Event, EventKind, Item, ItemId, SessionId, Timestamp, UserId};
use attune_engine::{CatalogItem, IngestOutcome, SessionView, UpsertOutcome};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::error::ApiError;

/// What the visitor did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum EventType {
    View,
    Click,
    AddToCart,
    RemoveFromCart,
    Purchase,
    Wishlist,
    RecommendationClick,
    Skip,
    Search,
}

impl From<EventType> for EventKind {
    fn from(t: EventType) -> Self {
        match t {
            EventType::View => EventKind::View,
            EventType::Click => EventKind::Click,
            EventType::AddToCart => EventKind::AddToCart,
            EventType::RemoveFromCart => EventKind::RemoveFromCart,
            EventType::Purchase => EventKind::Purchase,
            EventType::Wishlist => EventKind::Wishlist,
            EventType::RecommendationClick => EventKind::RecommendationClick,
            EventType::Skip => EventKind::Skip,
            EventType::Search => EventKind::Search,
        }
    }
}

impl From<EventKind> for EventType {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::View => EventType::View,
            EventKind::Click => EventType::Click,
            EventKind::AddToCart => EventType::AddToCart,
            EventKind::RemoveFromCart => EventType::RemoveFromCart,
            EventKind::Purchase => EventType::Purchase,
            EventKind::Wishlist => EventType::Wishlist,
            EventKind::RecommendationClick => EventType::RecommendationClick,
            EventKind::Skip => EventType::Skip,
            EventKind::Search => EventType::Search,
        }
    }
}

/// One event, as sent to `POST /v1/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The visitor's session (1 to 128 bytes, no whitespace).
    pub session_id: String,
    /// The signed-in user, if any.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The item; required for every type but `search`. Unknown ids are accepted and counted
    /// (`unknown_items`): they update the session's item memory but move no affinity.
    #[serde(default)]
    pub item_id: Option<String>,
    /// Units, a whole number from 1 to 10000 (default 1).
    #[serde(default)]
    pub quantity: Option<f64>,
    /// When it happened: epoch milliseconds or an RFC 3339 string; server time if absent.
    #[serde(default, deserialize_with = "de_timestamp")]
    #[schema(value_type = Option<String>, example = "2026-11-22T09:30:00Z")]
    pub timestamp: Option<Timestamp>,
    /// The query text, for `search`.
    #[serde(default)]
    pub query: Option<String>,
    /// The filters, for `search`: `brand`, `category` (a string or a list), `price`
    /// (`{"min", "max"}`), `in_stock` (bool), and any attribute key (a string or a list).
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, serde_json::Value>>)]
    pub filters: Option<serde_json::Map<String, Value>>,
    /// Your id for this event (1 to 128 visible ASCII characters), making a retry safe: an event
    /// whose id its session (or its user's profile) already applied is skipped and counted in
    /// `duplicates`, on any replica sharing the store. Sessions and profiles remember their last
    /// 512 ids.
    #[serde(default)]
    pub event_id: Option<String>,
}

/// A batch: `{"events": [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatchIn {
    /// The events, applied in order per session.
    pub events: Vec<EventIn>,
}

/// The body of `POST /v1/events`: one event, or a batch. Only describes the contract (the
/// handler reads the body itself to name the offending field of a bad event).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EventsIn {
    /// A batch: `{"events": [...]}`.
    #[schema(title = "EventBatchIn")]
    Batch(EventBatchIn),
    /// One event.
    #[schema(title = "EventIn")]
    One(EventIn),
}

fn de_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(ms), _) if ms >= 0 => Ok(Some(Timestamp::from_millis(ms))),
            // Past i64: thousands of years ahead, far beyond the allowed skew.
            (None, Some(_)) => Err(serde::de::Error::custom(
                "is more than 5 minutes ahead of the server clock",
            )),
            (Some(_), _) => Err(serde::de::Error::custom(
                "must be non-negative epoch milliseconds",
            )),
            (None, None) => Err(serde::de::Error::custom("must be whole epoch milliseconds")),
        },
        Some(Value::String(s)) => parse_time(&s).map(Some).ok_or_else(|| {
            serde::de::Error::custom("must be an RFC 3339 time, e.g. 2026-11-22T09:30:00Z")
        }),
        Some(_) => Err(serde::de::Error::custom(
            "must be epoch milliseconds or an RFC 3339 string",
        )),
    }
}

/// Parses an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).ok().map(Timestamp::from_millis)
}

/// Formats a time as RFC 3339 UTC (with fractional seconds when they are not zero).
pub fn format_time(t: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_millis()) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn round(x: f32) -> f64 {
    (f64::from(x) * 10_000.0).round() / 10_000.0
}

impl EventIn {
    /// The domain event; `now` stands in for a missing timestamp.
    pub fn into_event(self, now: Timestamp) -> Result<Event, ApiError> {
        let quantity = match self.quantity {
            None => 1,
            Some(q)
                if q.is_finite()
                    && q.fract() == 0.0
                    && q >= 1.0
                    && q <= f64::from(MAX_QUANTITY) =>
            {
                q as u32
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "quantity",
                    format!("must be a whole number from 1 to {MAX_QUANTITY}"),
                ));
            }
        };
        let kind = EventKind::from(self.kind);
        let search = if kind == EventKind::Search {
            Some(SearchRequestEvent {
                query: self.query.unwrap_or_default(),
                filters: match self.filters {
                    Some(f) => filters_from_wire(f)?,
                    None => SearchFilters::default(),
                },
            })
        } else if self.query.is_some() || self.filters.is_some() {
            let field = if self.query.is_some() {
                "query"
            } else {
                "filters"
            };
            return Err(ApiError::invalid(
                field,
                format!(
                    "only search events carry a query or filters, not {}",
                    kind.as_str()
                ),
            ));
        } else {
            None
        };
        Ok(Event {
            kind,
            session_id: SessionId::new(&self.session_id)?,
            user_id: self.user_id.as_deref().map(UserId::new).transpose()?,
            item_id: self.item_id.as_deref().map(ItemId::new).transpose()?,
            quantity,
            timestamp: self.timestamp.unwrap_or(now),
            search,
            event_id: self.event_id.map(String::into_boxed_str),
        })
    }
}

fn string_or_list(field: &str, v: Value) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid(
                    field,
                    "must be a string or a list of strings",
                )),
            })
            .collect(),
        _ => Err(ApiError::invalid(
            field,
            "must be a string or a list of strings",
        )),
    }
}

/// Reads the wire filter object into domain filters; errors name `filters.<key>`.
pub fn filters_from_wire(map: serde_json::Map<String, Value>) -> Result<SearchFilters, ApiError> {
    let mut f = SearchFilters::default();
    for (key, v) in map {
        let field = format!("filters.{key}");
        match key.as_str() {
            "brand" => f.brand = string_or_list(&field, v)?,
            "category" => f.category = string_or_list(&field, v)?,
            "in_stock" => {
                f.in_stock = Some(
                    v.as_bool()
                        .ok_or_else(|| ApiError::invalid(&field, "must be true or false"))?,
                );
            }
            "price" => {
                let Value::Object(range) = v else {
                    return Err(ApiError::invalid(
                        &field,
                        "must be an object {\"min\", \"max\"}",
                    ));
                };
                for (bound, n) in range {
                    let value = n.as_f64().ok_or_else(|| {
                        ApiError::invalid(format!("{field}.{bound}"), "must be a number")
                    })?;
                    match bound.as_str() {
                        "min" => f.price_min = Some(value),
                        "max" => f.price_max = Some(value),
                        _ => {
                            return Err(ApiError {
                                code: "unknown_field",
                                ..ApiError::invalid(
                                    format!("{field}.{bound}"),
                                    "a price range has only min and max",
                                )
                            });
                        }
                    }
                }
            }
            _ => {
                attune_core::item::check_attribute_key(&key)
                    .map_err(|e| ApiError::invalid(&field, e.to_string()))?;
                let values = string_or_list(&field, v)?;
                f.attributes.insert(key, values);
            }
        }
    }
    f.validate()?;
    Ok(f)
}

/// One affinity and its score.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreOut {
    /// Brand, category path, `key:value` attribute, or intent (`brand:X`, `category:X`, `key:value`).
    #[schema(value_type = String)]
    pub key: attune_core::Key,
    /// The decayed affinity, within the rules' `affinity_bound`.
    pub score: f64,
}

impl From<&Scored> for ScoreOut {
    fn from(s: &Scored) -> Self {
        ScoreOut {
            key: s.key.clone(),
            score: round(s.score),
        }
    }
}

/// The strongest affinities of each kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopOut {
    /// Brands.
    pub brand: Vec<ScoreOut>,
    /// Category path levels.
    pub category: Vec<ScoreOut>,
    /// Attributes (`key:value`).
    pub attribute: Vec<ScoreOut>,
    /// Search intents.
    pub intent: Vec<ScoreOut>,
}

impl From<&Scores> for TopOut {
    fn from(s: &Scores) -> Self {
        let list = |k| s.of(k).iter().map(ScoreOut::from).collect();
        TopOut {
            brand: list(AffinityKind::Brand),
            category: list(AffinityKind::Category),
            attribute: list(AffinityKind::Attribute),
            intent: list(AffinityKind::Intent),
        }
    }
}

/// The session an ingest touched, when it touched one.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionTopOut {
    /// The session.
    pub session_id: String,
    /// Events applied to it so far.
    pub event_count: u32,
    /// Its strongest affinities now.
    pub top: TopOut,
}

/// The answer to `POST /v1/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestOut {
    /// Events applied.
    pub applied: usize,
    /// Of those, events that named an item the catalog does not know.
    pub unknown_items: usize,
    /// Events skipped because their `event_id` was applied already (a retry); absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: usize,
    /// For a batch whose events all belong to one session: its updated top affinities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionTopOut>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl From<IngestOutcome> for IngestOut {
    fn from(o: IngestOutcome) -> Self {
        let session = o.session.map(|s| SessionTopOut {
            session_id: s.session_id.to_string(),
            event_count: s.event_count,
            top: TopOut::from(&s.top),
        });
        IngestOut {
            applied: o.applied,
            unknown_items: o.unknown_items,
            duplicates: o.duplicates,
            session,
        }
    }
}

/// One event that moved an affinity.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReasonOut {
    /// What the visitor did.
    pub event: EventType,
    /// The item, for item events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// The query, for searches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// When.
    pub at: String,
    /// How far it moved the affinity then.
    pub delta: f64,
    /// What is left of that move now.
    pub decayed: f64,
}

impl From<&Reason> for ReasonOut {
    fn from(r: &Reason) -> Self {
        ReasonOut {
            event: r.kind.into(),
            item_id: r.item_id.as_ref().map(ToString::to_string),
            query: r.query.as_deref().map(str::to_owned),
            at: format_time(r.at),
            delta: round(r.delta),
            decayed: round(r.decayed),
        }
    }
}

/// One affinity with its reason trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AffinityOut {
    /// The key.
    pub key: String,
    /// The decayed affinity.
    pub score: f64,
    /// The recent events that moved it, newest first.
    pub reasons: Vec<ReasonOut>,
}

/// Every affinity of a session, strongest first within each kind.
#[derive(Debug, Serialize, ToSchema, Default)]
pub struct AffinitiesOut {
    /// Brands.
    pub brand: Vec<AffinityOut>,
    /// Category path levels.
    pub category: Vec<AffinityOut>,
    /// Attributes (`key:value`).
    pub attribute: Vec<AffinityOut>,
    /// Search intents.
    pub intent: Vec<AffinityOut>,
}

/// An item the visitor scrolled past.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedOut {
    /// The item.
    pub item_id: String,
    /// How many times.
    pub count: u16,
}

/// An item in the cart.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartLineOut {
    /// The item.
    pub item_id: String,
    /// Units.
    pub quantity: u32,
}

/// The quantity a visitor usually takes of an item.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuantityOut {
    /// The item.
    pub item_id: String,
    /// Mean units per purchase (or per add-to-cart, before any purchase).
    pub usual_quantity: f64,
    /// Purchases.
    pub purchases: u16,
}

/// A session, as `GET /v1/sessions/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionOut {
    /// The session.
    pub session_id: String,
    /// The signed-in user, once an event named one.
    pub user_id: Option<String>,
    /// First event.
    pub created_at: String,
    /// Latest event.
    pub updated_at: String,
    /// When the session will be forgotten if it stays idle.
    pub expires_at: String,
    /// Events applied.
    pub event_count: u32,
    /// Events that named an item unknown to the catalog.
    pub unknown_item_events: u32,
    /// Affinities with their reasons.
    pub affinities: AffinitiesOut,
    /// Items the visitor engaged with, most recent first.
    pub seen: Vec<String>,
    /// Items the visitor scrolled past.
    pub skipped: Vec<SkippedOut>,
    /// The cart.
    pub cart: Vec<CartLineOut>,
    /// Usual quantities of the items the visitor carted or bought.
    pub quantities: Vec<QuantityOut>,
}

impl From<SessionView> for SessionOut {
    fn from(v: SessionView) -> Self {
        let mut affinities = AffinitiesOut::default();
        for a in &v.affinities {
            let out = AffinityOut {
                key: a.key.to_string(),
                score: round(a.score),
                reasons: a.reasons.iter().map(ReasonOut::from).collect(),
            };
            match a.kind {
                AffinityKind::Brand => affinities.brand.push(out),
                AffinityKind::Category => affinities.category.push(out),
                AffinityKind::Attribute => affinities.attribute.push(out),
                AffinityKind::Intent => affinities.intent.push(out),
            }
        }
        let items: &[ItemSummary] = &v.items;
        SessionOut {
            session_id: v.session.id().to_string(),
            user_id: v.session.user_id().map(ToString::to_string),
            created_at: format_time(v.session.created_at()),
            updated_at: format_time(v.session.updated_at()),
            expires_at: format_time(v.expires_at),
            event_count: v.session.event_count(),
            unknown_item_events: v.session.unknown_item_events(),
            affinities,
            seen: items
                .iter()
                .filter(|i| i.seen > 0)
                .map(|i| i.item_id.to_string())
                .collect(),
            skipped: items
                .iter()
                .filter(|i| i.skips > 0)
                .map(|i| SkippedOut {
                    item_id: i.item_id.to_string(),
                    count: i.skips,
                })
                .collect(),
            cart: items
                .iter()
                .filter(|i| i.in_cart > 0)
                .map(|i| CartLineOut {
                    item_id: i.item_id.to_string(),
                    quantity: u32::from(i.in_cart),
                })
                .collect(),
            quantities: items
                .iter()
                .filter(|i| i.usual_quantity > 0.0)
                .map(|i| QuantityOut {
                    item_id: i.item_id.to_string(),
                    usual_quantity: round(i.usual_quantity),
                    purchases: i.purchases,
                })
                .collect(),
        }
    }
}

/// One attribute value or several.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AttributeValue {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

/// A catalog item on the wire (`PUT /v1/items`, `GET /v1/items/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemDto {
    /// Unique id (1 to 128 bytes, no whitespace).
    pub id: String,
    /// Display title.
    pub title: String,
    /// Brand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Category path, levels separated by `>`: `Dairy & Alternatives > Milk`.
    #[serde(default)]
    pub category: String,
    /// Attributes: key (`a-z0-9_`) to a value or a list of values.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Whether it can be bought now (default true).
    #[serde(default = "yes")]
    pub in_stock: bool,
    /// When it entered the catalog (RFC 3339); the time of the upsert if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

fn yes() -> bool {
    true
}

impl ItemDto {
    /// The domain item; `now` stands in for a missing `created_at`.
    pub fn into_item(self, now: Timestamp) -> Result<Item, ApiError> {
        let created_at = match &self.created_at {
            None => now,
            Some(s) => parse_time(s).ok_or_else(|| {
                ApiError::invalid(
                    "created_at",
                    "must be an RFC 3339 time, e.g. 2026-11-22T09:30:00Z",
                )
            })?,
        };
        let attributes = self
            .attributes
            .into_iter()
            .map(|(k, v)| {
                let values = match v {
                    AttributeValue::One(s) => vec![s],
                    AttributeValue::Many(vs) => vs,
                };
                (k, values)
            })
            .collect();
        let item = Item {
            id: ItemId::new(&self.id).map_err(|e| ApiError::invalid("id", e.to_string()))?,
            title: self.title,
            brand: self.brand.map(|b| Arc::from(b.trim())),
            category: parse_category_path(&self.category)?,
            attributes,
            price: self.price,
            in_stock: self.in_stock,
            created_at,
        };
        item.validate()?;
        Ok(item)
    }
}

impl From<&CatalogItem> for ItemDto {
    fn from(c: &CatalogItem) -> Self {
        let i = &c.item;
        ItemDto {
            id: i.id.to_string(),
            title: i.title.clone(),
            brand: i.brand.as_deref().map(str::to_owned),
            category: i.category_path(),
            attributes: i
                .attributes
                .iter()
                .map(|(k, vs)| {
                    let v = match vs.as_slice() {
                        [one] => AttributeValue::One(one.clone()),
                        _ => AttributeValue::Many(vs.clone()),
                    };
                    (k.clone(), v)
                })
                .collect(),
            price: i.price,
            in_stock: i.in_stock,
            created_at: Some(format_time(i.created_at)),
        }
    }
}

/// A catalog item written as [`ItemDto`] straight from the catalog's copy: search answers write
/// a page of items per request, and building each one's `ItemDto` (a dozen strings and a map
/// cloned, then written and dropped) cost a fifth of a search. Same JSON, field for field
/// (tested).
///
/// The JSON is rendered once per catalog item and kept in its [`attune_engine::WireMemo`]; later
/// answers copy it.
#[derive(Debug, Clone)]
pub struct ItemView(pub Arc<CatalogItem>);

impl Serialize for ItemView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = self
            .0
            .wire
            .get_or_render(|| serde_json::value::to_raw_value(&ItemRender(&self.0)))
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// Writes a catalog item as [`ItemDto`] (what [`ItemView`] memoizes).
struct ItemRender<'a>(&'a CatalogItem);

impl Serialize for ItemRender<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};

        /// The category path, levels joined as `Item::category_path` joins them.
        struct Path<'a>(&'a [Arc<str>]);
        impl std::fmt::Display for Path<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                for (n, level) in self.0.iter().enumerate() {
                    if n > 0 {
                        f.write_str(" > ")?;
                    }
                    f.write_str(level)?;
                }
                Ok(())
            }
        }
        /// Attribute values: one value as a string, several as a list.
        struct Attributes<'a>(&'a BTreeMap<String, Vec<String>>);
        impl Serialize for Attributes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, vs) in self.0 {
                    match vs.as_slice() {
                        [one] => m.serialize_entry(k, one)?,
                        _ => m.serialize_entry(k, &Values(vs))?,
                    }
                }
                m.end()
            }
        }
        struct Values<'a>(&'a [String]);
        impl Serialize for Values<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for v in self.0 {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
        }

        let i = &self.0.item;
        let mut m = s.serialize_struct("ItemDto", 8)?;
        m.serialize_field("id", i.id.as_str())?;
        m.serialize_field("title", &i.title)?;
        match &i.brand {
            Some(b) => m.serialize_field("brand", &**b)?,
            None => m.skip_field("brand")?,
        }
        m.serialize_field("category", &format_args!("{}", Path(&i.category)))?;
        m.serialize_field("attributes", &Attributes(&i.attributes))?;
        match i.price {
            Some(p) => m.serialize_field("price", &p)?,
            None => m.skip_field("price")?,
        }
        m.serialize_field("in_stock", &i.in_stock)?;
        // RFC 3339 is at most 35 bytes here: formatted on the stack.
        let mut buf = [0u8; 64];
        let mut w = &mut buf[..];
        let t = OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(i.created_at.as_millis()) * 1_000_000,
        )
        .ok()
        .and_then(|t| t.format_into(&mut w, &Rfc3339).ok());
        let created = t
            .and_then(|n| std::str::from_utf8(&buf[..n]).ok())
            .unwrap_or_default();
        m.serialize_field("created_at", created)?;
        m.end()
    }
}

/// A page of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemsPage {
    /// The items, in id order.
    pub items: Vec<ItemDto>,
    /// Items in the catalog.
    pub total: usize,
    /// Position of the first item of this page.
    pub offset: usize,
    /// Most items per page asked for.
    pub limit: usize,
}

/// The answer to `PUT /v1/items`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpsertOut {
    /// New items.
    pub inserted: usize,
    /// Replaced items.
    pub updated: usize,
    /// Items in the catalog now.
    pub total: usize,
}

impl UpsertOut {
    /// From the engine's outcome and the catalog size.
    pub fn new(o: UpsertOutcome, total: usize) -> Self {
        UpsertOut {
            inserted: o.inserted,
            updated: o.updated,
            total,
        }
    }
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthOut {
    /// `ok`, or `unavailable`.
    pub status: &'static str,
    /// What the search side holds (`/readyz` only): shows when background embedding is done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexOut>,
}

/// Sizes of the catalog and its search indexes.
#[derive(Debug, Serialize, ToSchema)]
pub struct IndexOut {
    /// Items in the catalog.
    pub catalog_items: usize,
    /// Items in the keyword index.
    pub keyword_items: usize,
    /// Item vectors held (absent when vector search is off); below `catalog_items` while new
    /// items are being embedded in the background.
    pub vectors: Option<usize>,
}

impl IndexOut {
    /// The engine's current sizes.
    pub fn of(engine: &attune_engine::Engine) -> Self {
        let (keyword_items, vectors) = engine.index_sizes();
        IndexOut {
            catalog_items: engine.catalog().len(),
            keyword_items,
            vectors,
        }
    }
}

/// `POST /v1/search`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchIn {
    /// The query text; may be empty when filters are set (browsing).
    #[serde(default)]
    pub query: String,
    /// The visitor's session: personalizes the results, and the search is recorded in it.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The signed-in user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Filters: `brand`, `category` (a string or a list; any level of the path), `price`
    /// (`{"min", "max"}`), `in_stock` (bool), and any attribute key (a string or a list).
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, serde_json::Value>>)]
    pub filters: Option<serde_json::Map<String, Value>>,
    /// Page size, 1 to 100 (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Results to skip (default 0).
    #[serde(default)]
    pub offset: Option<usize>,
    /// Explain each result: retrieval ranks, fused score, every boost and its signal.
    #[serde(default)]
    pub explain: bool,
    /// Leave out items the visitor already engaged with.
    #[serde(default)]
    pub exclude_seen: bool,
}

impl SearchIn {
    /// The engine's request.
    pub fn into_request(self) -> Result<attune_engine::SearchRequest, ApiError> {
        Ok(attune_engine::SearchRequest {
            query: self.query,
            filters: match self.filters {
                Some(f) => filters_from_wire(f)?,
                None => SearchFilters::default(),
            },
            session_id: self.session_id.as_deref().map(SessionId::new).transpose()?,
            user_id: self.user_id.as_deref().map(UserId::new).transpose()?,
            limit: self.limit.unwrap_or(20),
            offset: self.offset.unwrap_or(0),
            explain: self.explain,
            exclude_seen: self.exclude_seen,
            retrievers: attune_engine::Retrievers::Hybrid,
        })
    }
}

/// One affinity behind a boost.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignalOut {
    /// The affinity key.
    pub key: String,
    /// Its value now (for a skip: how many times the item was skipped).
    pub affinity: f64,
}

/// A boost that applied to a result.
#[derive(Debug, Serialize, ToSchema)]
pub struct BoostOut {
    /// `session` or `profile`.
    pub source: &'static str,
    /// `brand`, `category`, `attribute`, `intent` or `skip`.
    pub kind: &'static str,
    /// The affinities that caused it.
    pub signals: Vec<SignalOut>,
    /// The boost added to the score.
    pub boost: f64,
    /// Its cap.
    pub cap: f64,
}

/// One source that proposed a result: its name, the rank it gave and its own score.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceHitOut {
    /// `keyword`, `vector` (search); `sequential`, `session_knn`, `cooccurrence`, `content`,
    /// `trending`, `bandit` (recommendations).
    pub source: &'static str,
    /// 1-based rank in that source's list.
    pub rank: u32,
    /// The source's own score (BM25, cosine, a model score, a decayed count…).
    pub score: f64,
}

impl From<&attune_core::rerank::SourceHit> for SourceHitOut {
    fn from(h: &attune_core::rerank::SourceHit) -> Self {
        SourceHitOut {
            source: h.source,
            rank: h.rank,
            score: round(h.score),
        }
    }
}

/// The boosts of a reranked result, in wire form.
pub(crate) fn boosts_out(boosts: &[attune_core::rerank::Boost]) -> Vec<BoostOut> {
    use attune_core::rerank::{BoostKind, Source};
    boosts
        .iter()
        .map(|b| BoostOut {
            source: match b.source {
                Source::Session => "session",
                Source::Profile => "profile",
            },
            kind: match b.kind {
                BoostKind::Brand => "brand",
                BoostKind::Category => "category",
                BoostKind::Attribute => "attribute",
                BoostKind::Intent => "intent",
                BoostKind::Skip => "skip",
            },
            signals: b
                .signals
                .iter()
                .map(|(key, a)| SignalOut {
                    key: key.clone(),
                    affinity: round(*a),
                })
                .collect(),
            boost: round(b.boost),
            cap: round(b.cap),
        })
        .collect()
}

/// Why a result sits where it does.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplanationOut {
    /// The retrievers that found it, with rank and score.
    pub sources: Vec<SourceHitOut>,
    /// Rank in the keyword (BM25) list, 1-based (also in `sources`).
    pub keyword_rank: Option<u32>,
    /// Rank in the vector list, 1-based (also in `sources`).
    pub vector_rank: Option<u32>,
    /// Reciprocal-rank-fusion score (six decimals: one rank apart is about 0.0003).
    pub fused: f64,
    /// Share of the query's terms the item matches: results of a higher tier stay above.
    pub tier: f64,
    /// Tier plus the weighted fused score.
    pub relevance: f64,
    /// Position before personalization, 1-based.
    pub retrieval_position: u32,
    /// How many places personalization moved it (positive: up).
    pub moved: i64,
    /// Every boost that applied.
    pub boosts: Vec<BoostOut>,
    /// All boosts together, after the total cap.
    pub adjustment: f64,
    /// Whether the total cap cut the sum.
    pub capped: bool,
    /// Whether the brand-diversity cap pushed it to a later page.
    pub diversity_demoted: bool,
}

impl ExplanationOut {
    fn new(e: &attune_core::rerank::Explanation, position: usize) -> Self {
        let rank_of = |name: &str| e.sources.iter().find(|h| h.source == name).map(|h| h.rank);
        ExplanationOut {
            sources: e.sources.iter().map(SourceHitOut::from).collect(),
            keyword_rank: rank_of("keyword"),
            vector_rank: rank_of("vector"),
            fused: (f64::from(e.fused) * 1e6).round() / 1e6,
            tier: round(e.tier),
            relevance: round(e.relevance),
            retrieval_position: e.retrieval_position,
            moved: i64::from(e.retrieval_position) - position as i64,
            boosts: boosts_out(&e.boosts),
            adjustment: round(e.adjustment),
            capped: e.capped,
            diversity_demoted: e.diversity_demoted,
        }
    }
}

/// One search result.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResultOut {
    /// The item.
    #[schema(value_type = ItemDto)]
    pub item: ItemView,
    /// Relevance plus personal boosts.
    pub score: f64,
    /// Why, when `explain` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<ExplanationOut>,
}

/// A facet value and how many matching items have it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FacetValueOut {
    /// The value.
    pub value: String,
    /// Matching items with it.
    pub count: u64,
}

/// Price range among matches.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceRangeOut {
    /// Lowest.
    pub min: f64,
    /// Highest.
    pub max: f64,
}

/// Facet counts over all keyword matches.
#[derive(Debug, Serialize, ToSchema)]
pub struct FacetsOut {
    /// Brands.
    pub brand: Vec<FacetValueOut>,
    /// Category paths (every level).
    pub category: Vec<FacetValueOut>,
    /// Each attribute key's values.
    pub attributes: BTreeMap<String, Vec<FacetValueOut>>,
    /// In stock or not.
    pub in_stock: Vec<FacetValueOut>,
    /// Price range.
    pub price: Option<PriceRangeOut>,
}

fn facet_values(v: &[attune_search::keyword::FacetValue]) -> Vec<FacetValueOut> {
    v.iter()
        .map(|f| FacetValueOut {
            value: f.value.clone(),
            count: f.count,
        })
        .collect()
}

/// The answer to `POST /v1/search`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchOut {
    /// The page of results.
    pub results: Vec<SearchResultOut>,
    /// Matches in all.
    pub total: usize,
    /// Facet counts.
    pub facets: FacetsOut,
    /// Whether the visitor's session shaped this page.
    pub personalized: bool,
    /// Stores that did not answer (`sessions`, `profiles`): the page is not personalized by them
    /// and the search was not recorded. Absent when everything answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<&'static str>,
}

impl SearchOut {
    /// From the engine's outcome; `offset` numbers the positions for `moved`.
    pub fn new(o: attune_engine::SearchOutcome, offset: usize) -> Self {
        let f = &o.facets;
        SearchOut {
            results: o
                .results
                .into_iter()
                .enumerate()
                .map(|(i, r)| SearchResultOut {
                    item: ItemView(r.item),
                    score: round(r.score),
                    explanation: r
                        .explanation
                        .as_ref()
                        .map(|e| ExplanationOut::new(e, offset + i + 1)),
                })
                .collect(),
            total: o.total,
            facets: FacetsOut {
                brand: facet_values(&f.brand),
                category: facet_values(&f.category),
                attributes: f
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), facet_values(v)))
                    .collect(),
                in_stock: facet_values(&f.in_stock),
                price: f.price.map(|p| PriceRangeOut {
                    min: p.min,
                    max: p.max,
                }),
            },
            personalized: o.personalized,
            degraded: o.degraded,
        }
    }
}

/// `PUT /v1/users/{user_id}/preferences`: what a signed-in user says they like (onboarding). Each
/// value must be known to the catalog; each moves its profile affinity like
/// `profile.preference_weight` of a purchase, and fades with the profile half-life.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesIn {
    /// Brand names, as items carry them.
    #[serde(default)]
    pub brands: Vec<String>,
    /// Category paths at any level, levels joined by ` > ` (`Dairy & Alternatives > Milk`).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Attribute values by attribute key (`{"diet": ["vegan"]}`).
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl From<PreferencesIn> for attune_engine::Preferences {
    fn from(p: PreferencesIn) -> Self {
        attune_engine::Preferences {
            brands: p.brands,
            categories: p.categories,
            attributes: p.attributes,
        }
    }
}

/// A signed-in user's long-term profile, as `GET /v1/users/{id}/profile` shows it: the same
/// affinities as a session, fed by every event that carried the user id and by stated
/// preferences, decaying over weeks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileOut {
    /// The user.
    pub user_id: String,
    /// Latest event or preference.
    pub updated_at: String,
    /// When the profile will be forgotten if the user stays away.
    pub expires_at: String,
    /// Events applied.
    pub event_count: u32,
    /// Affinities with their reasons (recent events; stated preferences have none).
    pub affinities: AffinitiesOut,
    /// Items the user engaged with, most recent first.
    pub seen: Vec<String>,
    /// Items the user scrolled past.
    pub skipped: Vec<SkippedOut>,
}

impl From<SessionView> for ProfileOut {
    fn from(v: SessionView) -> Self {
        let s = SessionOut::from(v);
        ProfileOut {
            user_id: s.session_id,
            updated_at: s.updated_at,
            expires_at: s.expires_at,
            event_count: s.event_count,
            affinities: s.affinities,
            seen: s.seen,
            skipped: s.skipped,
        }
    }
}

/// A rule that moved a recommended item.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleOut {
    /// `new_arrival`, `buy_again`, `pinned` or `category_cap`.
    pub rule: &'static str,
    /// What it added to the blend (`new_arrival`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boost: Option<f64>,
    /// The cap that moved it down (`category_cap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

impl From<&attune_engine::RuleEffect> for RuleOut {
    fn from(r: &attune_engine::RuleEffect) -> Self {
        use attune_engine::RuleEffect as R;
        let (rule, boost, max) = match r {
            R::NewArrival { boost } => ("new_arrival", Some(round(*boost)), None),
            R::BuyAgain => ("buy_again", None, None),
            R::Pinned => ("pinned", None, None),
            R::CategoryCap { max } => ("category_cap", None, Some(*max)),
        };
        RuleOut { rule, boost, max }
    }
}

/// One source's part in a recommended item's blend.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContributionOut {
    /// The source.
    pub source: &'static str,
    /// Its normalized score times its weight.
    pub value: f64,
}

/// Why a recommended item is in the list, where it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecExplanationOut {
    /// The sources that proposed it (rank from 1) or only scored it (rank 0), with their scores.
    pub sources: Vec<SourceHitOut>,
    /// Each source's weighted, normalized score.
    pub contributions: Vec<ContributionOut>,
    /// The blend: the contributions plus rule boosts.
    pub blended: f64,
    /// Position by the blend alone, 1-based.
    pub blend_position: u32,
    /// The personal boosts that applied (session and profile), each with its signal and cap.
    pub boosts: Vec<BoostOut>,
    /// All boosts together, after the total cap.
    pub adjustment: f64,
    /// Whether the total cap cut the sum.
    pub capped: bool,
    /// Whether the brand-diversity cap moved it down.
    pub diversity_demoted: bool,
    /// The business rules that moved it.
    pub rules: Vec<RuleOut>,
    /// A cold visitor's list: the bandit's Thompson draw for the item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandit: Option<BanditDrawOut>,
}

/// One Thompson draw: a click rate sampled from Beta(alpha, beta), the item's posterior on the
/// surface (prior, clicks, shows without a click, and a new item's exploration boost).
#[derive(Debug, Serialize, ToSchema)]
pub struct BanditDrawOut {
    /// The sampled click rate.
    pub sample: f64,
    /// α of the posterior.
    pub alpha: f64,
    /// β of the posterior.
    pub beta: f64,
}

impl From<&attune_engine::RecExplanation> for RecExplanationOut {
    fn from(e: &attune_engine::RecExplanation) -> Self {
        RecExplanationOut {
            sources: e.sources.iter().map(SourceHitOut::from).collect(),
            contributions: e
                .contributions
                .iter()
                .map(|(source, v)| ContributionOut {
                    source,
                    value: round(*v),
                })
                .collect(),
            blended: round(e.blended),
            blend_position: e.rerank.retrieval_position,
            boosts: boosts_out(&e.rerank.boosts),
            adjustment: round(e.rerank.adjustment),
            capped: e.rerank.capped,
            diversity_demoted: e.rerank.diversity_demoted,
            rules: e.rules.iter().map(RuleOut::from).collect(),
            bandit: e.bandit.map(|d| BanditDrawOut {
                sample: (d.sample * 10_000.0).round() / 10_000.0,
                alpha: (d.alpha * 10_000.0).round() / 10_000.0,
                beta: (d.beta * 10_000.0).round() / 10_000.0,
            }),
        }
    }
}

/// One recommended item.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendedOut {
    /// The item.
    #[schema(value_type = ItemDto)]
    pub item: ItemView,
    /// Its score: the blend's share of the best plus personal boosts.
    pub score: f64,
    /// The visitor's usual quantity of it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usual_quantity: Option<f64>,
    /// Why, when `explain` was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<RecExplanationOut>,
}

/// A recommendation list.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendationsOut {
    /// The surface (`home`, `similar`, `cart`, `bought-together`, `next`).
    pub surface: &'static str,
    /// How the list was made: `pipeline` (the sources in `sources`), `bandit` (a cold visitor:
    /// Thompson sampling over trending and new items) or `fallback` (nothing known yet: new
    /// arrivals, then the catalog).
    pub strategy: &'static str,
    /// The sources that took part.
    pub sources: Vec<&'static str>,
    /// The list.
    pub items: Vec<RecommendedOut>,
    /// Whether session or profile signals took part.
    pub personalized: bool,
    /// Sources that failed for this request (the list was made without them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<&'static str>,
}

impl From<attune_engine::RecommendOutcome> for RecommendationsOut {
    fn from(o: attune_engine::RecommendOutcome) -> Self {
        use attune_engine::Strategy;
        let (strategy, sources) = match o.strategy {
            Strategy::Pipeline(used) => ("pipeline", used),
            Strategy::Bandit => ("bandit", vec!["bandit"]),
            Strategy::Fallback => ("fallback", Vec::new()),
        };
        RecommendationsOut {
            surface: o.surface.path_name(),
            strategy,
            sources,
            items: o
                .items
                .into_iter()
                .map(|r| RecommendedOut {
                    score: round(r.score),
                    usual_quantity: r.usual_quantity.map(round),
                    explanation: r.explanation.as_deref().map(RecExplanationOut::from),
                    item: ItemView(r.item),
                })
                .collect(),
            personalized: o.personalized,
            degraded: o.degraded,
        }
    }
}

/// What a surface showed and what was clicked.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackIn {
    /// The surface the list was shown on (`home`, `similar`, `cart`, `bought-together`, `next`).
    pub surface: String,
    /// The visitor's session (optional; not used by the bandit, kept for attribution).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The items shown, in order (1 to 100).
    pub shown: Vec<String>,
    /// The items clicked, each among `shown` (may be empty: shown, nothing clicked).
    #[serde(default)]
    pub clicked: Vec<String>,
}

/// What a feedback recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackOut {
    /// Items counted as shown (repeats once).
    pub shown: usize,
    /// Items counted as clicked.
    pub clicked: usize,
}

/// One interaction of a signed-in user: an item event applied to the long-term profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct InteractionOut {
    /// What was done.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The item.
    pub item_id: String,
    /// The weight the profile rules gave this type when it was applied (`profile.weights`:
    /// purchase 5, add-to-cart 3, …), before decay.
    pub weight: f64,
    /// When it happened.
    pub at: String,
    /// The session it was sent with.
    pub session_id: String,
    /// The client's id for the event, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl From<attune_store::profile::Interaction> for InteractionOut {
    fn from(i: attune_store::profile::Interaction) -> Self {
        InteractionOut {
            kind: i.kind.into(),
            item_id: i.item_id.to_string(),
            weight: round(i.weight),
            at: format_time(i.at),
            session_id: i.session_id.to_string(),
            event_id: i.event_id.map(String::from),
        }
    }
}

/// A user's recent interactions, as `GET /v1/users/{id}/interactions` shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct InteractionsOut {
    /// The user.
    pub user_id: String,
    /// Newest first.
    pub interactions: Vec<InteractionOut>,
}

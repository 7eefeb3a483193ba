//! Which column of a PostgreSQL result becomes which part of an item, how each is selected (the
//! cast in SQL) and read, and the mapping of one row to an upsert or a deletion.
//!
//! Pure: no database here. [`Plan::new`] decides everything from the result's column names and
//! types, before any row is read, so a column of a type Attune cannot use is an error naming it
//! at once; [`Plan::map_row`] turns one row's [`Cell`]s into a [`Change`] and checks the item as
//! the server would (`ItemDto::into_item`), so a row that cannot be imported is named (its id and
//! the column to blame) before anything of its batch is sent.

use std::collections::BTreeMap;

use anyhow::{bail, ensure};
use attune_core::Timestamp;
use attune_server::dto::{AttributeValue, ItemDto};
use tokio_postgres::types::{Kind, Type};

/// The name of a jsonb (or json) column whose object is merged into the attributes.
pub(crate) const ATTRIBUTES_COLUMN: &str = "attributes";

/// What a PostgreSQL type is to the importer: how it is selected and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlKind {
    /// `text`, `varchar`, `char(n)`, `name`, `citext`, enums: read as text.
    Text,
    /// `smallint`, `integer`, `bigint`: read as `bigint`.
    Int,
    /// `real`: read as `real` (printed as PostgreSQL prints it: `0.1`, not `0.100000001…`).
    Float4,
    /// `double precision`.
    Float8,
    /// `numeric`: read as text (exact), parsed where a number is needed.
    Numeric,
    /// `boolean`.
    Bool,
    /// `timestamp with time zone`: read as text (the session runs in UTC).
    Timestamptz,
    /// `timestamp without time zone` (taken as UTC where a time is needed).
    Timestamp,
    /// `date`.
    Date,
    /// `uuid`: read as text.
    Uuid,
    /// `json`, `jsonb`: read as text and parsed.
    Json,
    /// An array of any scalar above (not json): read as `text[]`.
    TextArray,
    /// Anything else (`bytea`, composite types, ranges, geometry, …).
    Unsupported,
}

impl SqlKind {
    /// The kind of a column's type; a domain is its base type's kind.
    pub(crate) fn of(ty: &Type) -> SqlKind {
        match ty.kind() {
            Kind::Enum(_) => SqlKind::Text,
            Kind::Domain(base) => SqlKind::of(base),
            Kind::Array(member) => match SqlKind::of(member) {
                SqlKind::Json | SqlKind::TextArray | SqlKind::Unsupported => SqlKind::Unsupported,
                _ => SqlKind::TextArray,
            },
            Kind::Simple => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR => {
                    SqlKind::Text
                }
                Type::INT2 | Type::INT4 | Type::INT8 => SqlKind::Int,
                Type::FLOAT4 => SqlKind::Float4,
                Type::FLOAT8 => SqlKind::Float8,
                Type::NUMERIC => SqlKind::Numeric,
                Type::BOOL => SqlKind::Bool,
                Type::TIMESTAMPTZ => SqlKind::Timestamptz,
                Type::TIMESTAMP => SqlKind::Timestamp,
                Type::DATE => SqlKind::Date,
                Type::UUID => SqlKind::Uuid,
                Type::JSON | Type::JSONB => SqlKind::Json,
                _ if ty.name() == "citext" => SqlKind::Text,
                _ => SqlKind::Unsupported,
            },
            _ => SqlKind::Unsupported,
        }
    }

    /// How a value of this kind is read from the row (after [`Plan::select_list`]'s cast).
    pub(crate) fn read(self) -> Read {
        match self {
            SqlKind::Int => Read::Int,
            SqlKind::Float4 => Read::Float4,
            SqlKind::Float8 => Read::Float8,
            SqlKind::Bool => Read::Bool,
            SqlKind::TextArray => Read::TextArray,
            _ => Read::Text,
        }
    }

    fn is_number(self) -> bool {
        matches!(
            self,
            SqlKind::Int | SqlKind::Float4 | SqlKind::Float8 | SqlKind::Numeric
        )
    }
}

/// The Rust type a selected column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// `String`.
    Text,
    /// `i64`.
    Int,
    /// `f32`.
    Float4,
    /// `f64`.
    Float8,
    /// `bool`.
    Bool,
    /// `Vec<Option<String>>`.
    TextArray,
}

/// One value of a row, as read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// SQL NULL.
    Null,
    /// Text (and numeric, timestamps, uuids, json: as text).
    Text(String),
    /// An integer.
    Int(i64),
    /// A floating-point number, with the text it prints as.
    Float(f64, String),
    /// A boolean.
    Bool(bool),
    /// An array; NULL elements are `None`.
    Texts(Vec<Option<String>>),
}

/// What a column becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// `title`.
    Title,
    /// `brand`.
    Brand,
    /// `category`: a path `a > b` (text) or its levels (text[]).
    Category,
    /// `price`.
    Price,
    /// `in_stock`: a boolean, or a stock count (in stock when above 0).
    InStock,
    /// `created_at`.
    CreatedAt,
    /// An attribute under the column's name.
    Attribute,
    /// The jsonb object of attributes.
    Attributes,
    /// The deletion flag.
    Deleted,
}

/// One selected column.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    /// The column's name in the result.
    pub(crate) name: String,
    /// Its kind.
    pub(crate) kind: SqlKind,
    /// What it becomes.
    pub(crate) role: Role,
}

/// A column read for the cursor: its name and type (the cursor's text is cast back to it).
#[derive(Debug, Clone)]
pub(crate) struct KeyColumn {
    /// The column's name.
    pub(crate) name: String,
    /// Its type, to cast the saved cursor's text back to.
    pub(crate) ty: Type,
}

/// Which columns play which part, from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Naming {
    /// The column with the item id.
    pub(crate) id: String,
    /// The column that orders changes.
    pub(crate) updated_at: String,
    /// A boolean column: true sends a deletion.
    pub(crate) deleted: Option<String>,
    /// Columns left out.
    pub(crate) ignore: Vec<String>,
}

/// How every column of a result is read and mapped.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The cursor's time column (selected first, as text).
    pub(crate) updated_at: KeyColumn,
    /// The id column (selected second, as text).
    pub(crate) id: KeyColumn,
    /// The other selected columns, in select order after those two.
    pub(crate) columns: Vec<Planned>,
}

/// One row's outcome.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Insert or replace this item.
    Upsert(Box<ItemDto>),
    /// Delete the item with this id.
    Delete(String),
}

impl Change {
    /// The item id it concerns.
    pub(crate) fn id(&self) -> &str {
        match self {
            Change::Upsert(item) => &item.id,
            Change::Delete(id) => id,
        }
    }
}

/// A row that cannot become an item: which row, which column, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {row}: column {column:?}: {message}")]
pub(crate) struct RowError {
    /// The row, by its id (or its updated-at value when the id is NULL).
    pub(crate) row: String,
    /// The column to blame.
    pub(crate) column: String,
    /// What is wrong.
    pub(crate) message: String,
}

/// `"name"`, quoted for SQL.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A type's name for a cast, schema-qualified and quoted (`"pg_catalog"."timestamptz"`).
pub(crate) fn type_name(ty: &Type) -> String {
    format!("{}.{}", ident(ty.schema()), ident(ty.name()))
}

fn describe(ty: &Type) -> String {
    if ty.schema() == "pg_catalog" {
        ty.name().to_owned()
    } else {
        format!("{}.{}", ty.schema(), ty.name())
    }
}

/// The field a column name maps to, if it names one.
fn field_role(name: &str) -> Option<Role> {
    Some(match name {
        "title" => Role::Title,
        "brand" => Role::Brand,
        "category" => Role::Category,
        "price" => Role::Price,
        "in_stock" => Role::InStock,
        "created_at" => Role::CreatedAt,
        _ => return None,
    })
}

impl Plan {
    /// Plans a result with these columns (name and type, in order). Errors name the column: a
    /// missing id, updated-at or title column, a field of the wrong type, a column of a type that
    /// cannot become an attribute, a name that cannot be an attribute key, a name seen twice.
    pub(crate) fn new(columns: &[(String, Type)], naming: &Naming) -> anyhow::Result<Plan> {
        let names = || {
            columns
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for wanted in naming.ignore.iter() {
            ensure!(
                columns.iter().any(|(n, _)| n == wanted),
                "--ignore-column {wanted}: no such column; the columns are: {}",
                names()
            );
        }
        let find = |flag: &str, name: &str| -> anyhow::Result<(String, Type)> {
            let mut found = columns.iter().filter(|(n, _)| n == name);
            let Some(c) = found.next() else {
                bail!(
                    "{flag} {name}: no such column; the columns are: {}",
                    names()
                );
            };
            ensure!(
                found.next().is_none(),
                "the result has two columns named {name:?}; give one another name (AS …) in \
                 --query"
            );
            Ok(c.clone())
        };
        let (id_name, id_ty) = find("--id-column", &naming.id)?;
        match SqlKind::of(&id_ty) {
            SqlKind::Text | SqlKind::Int | SqlKind::Numeric | SqlKind::Uuid => {}
            _ => bail!(
                "column {id_name:?} (--id-column) is {}; an id must be text, an integer, numeric \
                 or a uuid",
                describe(&id_ty)
            ),
        }
        let (u_name, u_ty) = find("--updated-at", &naming.updated_at)?;
        match SqlKind::of(&u_ty) {
            SqlKind::Timestamptz
            | SqlKind::Timestamp
            | SqlKind::Date
            | SqlKind::Int
            | SqlKind::Numeric
            | SqlKind::Float4
            | SqlKind::Float8
            | SqlKind::Text
            | SqlKind::Uuid => {}
            _ => bail!(
                "column {u_name:?} (--updated-at) is {}; it must be a timestamp, a date, a number \
                 or text",
                describe(&u_ty)
            ),
        }
        if let Some(d) = &naming.deleted {
            let (name, ty) = find("--deleted-column", d)?;
            ensure!(
                SqlKind::of(&ty) == SqlKind::Bool,
                "column {name:?} (--deleted-column) is {}; it must be boolean",
                describe(&ty)
            );
        }
        ensure!(
            columns.iter().any(|(n, _)| n == "title")
                && !naming.ignore.iter().any(|i| i == "title"),
            "no column named title: every item needs one (in --query, name one: `name AS \
             title`); the columns are: {}",
            names()
        );

        let mut planned: Vec<Planned> = Vec::new();
        for (name, ty) in columns {
            if naming.ignore.contains(name) || *name == naming.id {
                continue;
            }
            let kind = SqlKind::of(ty);
            let role = if naming.deleted.as_deref() == Some(name.as_str()) {
                Role::Deleted
            } else if let Some(role) = field_role(name) {
                role
            } else if *name == naming.updated_at {
                // The cursor column is not item content (unless it names a field, above).
                continue;
            } else if name == ATTRIBUTES_COLUMN && kind == SqlKind::Json {
                Role::Attributes
            } else {
                Role::Attribute
            };
            if planned.iter().any(|p| p.name == *name) {
                bail!(
                    "the result has two columns named {name:?}; give one another name (AS …) in \
                     --query, or leave it out with --ignore-column {name}"
                );
            }
            let wrong = |wants: &str| {
                anyhow::anyhow!(
                    "column {name:?} is {}; {wants} (cast it in --query, or leave it out with \
                     --ignore-column {name})",
                    describe(ty)
                )
            };
            match role {
                Role::Title | Role::Brand if kind != SqlKind::Text => {
                    return Err(wrong(&format!("the item's {name} must be text")));
                }
                Role::Category if !matches!(kind, SqlKind::Text | SqlKind::TextArray) => {
                    return Err(wrong(
                        "the category must be text (`a > b`) or an array of its levels",
                    ));
                }
                Role::Price if !kind.is_number() => {
                    return Err(wrong(
                        "the price must be a number (integer, real, double precision or numeric)",
                    ));
                }
                Role::InStock if !matches!(kind, SqlKind::Bool | SqlKind::Int) => {
                    return Err(wrong(
                        "in_stock must be boolean (or an integer stock count)",
                    ));
                }
                Role::CreatedAt
                    if !matches!(
                        kind,
                        SqlKind::Timestamptz | SqlKind::Timestamp | SqlKind::Date | SqlKind::Text
                    ) =>
                {
                    return Err(wrong(
                        "created_at must be a timestamp, a date or RFC 3339 text",
                    ));
                }
                Role::Attribute => {
                    if matches!(kind, SqlKind::Json | SqlKind::Unsupported) {
                        return Err(wrong(&format!(
                            "an attribute must be text, a number, a boolean, a date or time, a \
                             uuid or an array of those (only a json column named \
                             {ATTRIBUTES_COLUMN} is read, as an object of attributes)"
                        )));
                    }
                    if let Err(e) = attune_core::item::check_attribute_key(name) {
                        bail!(
                            "column {name:?} cannot be an attribute: {e} (rename it in --query: \
                             `{} AS some_name`, or leave it out with --ignore-column {name})",
                            ident(name)
                        );
                    }
                }
                _ => {}
            }
            planned.push(Planned {
                name: name.clone(),
                kind,
                role,
            });
        }
        Ok(Plan {
            updated_at: KeyColumn {
                name: u_name,
                ty: u_ty,
            },
            id: KeyColumn {
                name: id_name,
                ty: id_ty,
            },
            columns: planned,
        })
    }

    /// The select list over the source aliased `q`: the cursor's updated-at and id as text, then
    /// every planned column cast to what it is read as.
    pub(crate) fn select_list(&self) -> String {
        let mut out = vec![
            format!("q.{}::text", ident(&self.updated_at.name)),
            format!("q.{}::text", ident(&self.id.name)),
        ];
        for c in &self.columns {
            let col = format!("q.{}", ident(&c.name));
            let rfc3339 = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;
            out.push(match (&c.role, c.kind) {
                (Role::CreatedAt, SqlKind::Timestamptz) => {
                    format!("to_char({col} AT TIME ZONE 'UTC', {rfc3339})")
                }
                (Role::CreatedAt, SqlKind::Timestamp) => format!("to_char({col}, {rfc3339})"),
                (Role::CreatedAt, SqlKind::Date) => {
                    format!(r#"to_char({col}, 'YYYY-MM-DD"T00:00:00Z"')"#)
                }
                (_, kind) => match kind.read() {
                    Read::Int => format!("{col}::int8"),
                    Read::Float4 => format!("{col}::float4"),
                    Read::Float8 => format!("{col}::float8"),
                    Read::Bool => format!("{col}::bool"),
                    Read::TextArray => format!("{col}::text[]"),
                    Read::Text => format!("{col}::text"),
                },
            });
        }
        out.join(", ")
    }

    /// One row (its id as text, NULL if NULL; its updated-at as text; its planned columns' cells
    /// in order) as a change, checked as the server checks an item. `now` stands in for a
    /// missing `created_at` while checking (the sent item leaves it out).
    pub(crate) fn map_row(
        &self,
        id: Option<String>,
        updated_at: &str,
        cells: Vec<Cell>,
        now: Timestamp,
    ) -> Result<Change, RowError> {
        let Some(id) = id else {
            return Err(RowError {
                row: format!("with {} = {updated_at}", self.updated_at.name),
                column: self.id.name.clone(),
                message: "is NULL; every row needs an id".into(),
            });
        };
        let err = |column: &str, message: String| RowError {
            row: id.clone(),
            column: column.to_owned(),
            message,
        };
        debug_assert_eq!(cells.len(), self.columns.len());
        if let Some(i) = self.columns.iter().position(|c| c.role == Role::Deleted)
            && cells.get(i) == Some(&Cell::Bool(true))
        {
            return Ok(Change::Delete(id));
        }
        let mut item = ItemDto {
            id: id.clone(),
            title: String::new(),
            brand: None,
            category: String::new(),
            attributes: BTreeMap::new(),
            price: None,
            in_stock: true,
            created_at: None,
        };
        // Which column each attribute key came from, to name it in an error.
        let mut origin: BTreeMap<String, String> = BTreeMap::new();
        let mut title = None;
        for (c, cell) in self.columns.iter().zip(cells) {
            let name = c.name.as_str();
            match c.role {
                Role::Deleted => {}
                Role::Title => title = Some(cell),
                Role::Brand => item.brand = text(cell).filter(|s| !s.trim().is_empty()),
                Role::Category => {
                    item.category = match cell {
                        Cell::Texts(levels) => {
                            let levels: Vec<String> = levels.into_iter().flatten().collect();
                            if let Some(bad) = levels.iter().find(|l| l.contains('>')) {
                                return Err(err(
                                    name,
                                    format!(
                                        "the level {bad:?} contains '>', which separates levels"
                                    ),
                                ));
                            }
                            attune_core::item::join_path(&levels)
                        }
                        other => text(other).unwrap_or_default(),
                    }
                }
                Role::Price => {
                    item.price = match cell {
                        Cell::Null => None,
                        Cell::Int(n) => Some(n as f64),
                        Cell::Float(f, _) => Some(f),
                        Cell::Text(s) => Some(
                            s.trim()
                                .parse::<f64>()
                                .map_err(|_| err(name, format!("{s:?} is not a number")))?,
                        ),
                        other => return Err(err(name, format!("unexpected value {other:?}"))),
                    }
                }
                Role::InStock => {
                    item.in_stock = match cell {
                        Cell::Null => true,
                        Cell::Bool(b) => b,
                        Cell::Int(n) => n > 0,
                        other => return Err(err(name, format!("unexpected value {other:?}"))),
                    }
                }
                Role::CreatedAt => item.created_at = text(cell),
                Role::Attribute => {
                    if let Some(v) = attribute_value(cell) {
                        if let Some(from) = origin.get(name) {
                            return Err(err(
                                from,
                                format!("the attribute {name:?} comes from column {name:?} too"),
                            ));
                        }
                        origin.insert(name.to_owned(), name.to_owned());
                        item.attributes.insert(name.to_owned(), v);
                    }
                }
                Role::Attributes => {
                    let Some(json) = text(cell) else { continue };
                    for (key, v) in json_attributes(&json).map_err(|m| err(name, m))? {
                        if let Some(from) = origin.get(&key) {
                            return Err(err(
                                name,
                                format!("the attribute {key:?} comes from column {from:?} too"),
                            ));
                        }
                        origin.insert(key.clone(), name.to_owned());
                        item.attributes.insert(key, v);
                    }
                }
            }
        }
        item.title = match title {
            Some(Cell::Text(t)) => t,
            _ => return Err(err("title", "is NULL; every item needs a title".into())),
        };
        // The server's own check, so a bad row is named here and nothing of its batch is sent.
        if let Err(e) = item.clone().into_item(now) {
            let field = e.field.unwrap_or_default();
            let column = match field.as_str() {
                "id" => self.id.name.clone(),
                f => match f.strip_prefix("attributes.") {
                    Some(rest) => origin
                        .iter()
                        .find(|(key, _)| {
                            rest == key.as_str()
                                || rest
                                    .strip_prefix(key.as_str())
                                    .is_some_and(|r| r.starts_with('.'))
                        })
                        .map_or_else(|| ATTRIBUTES_COLUMN.to_owned(), |(_, col)| col.clone()),
                    None if f.is_empty() => ATTRIBUTES_COLUMN.to_owned(),
                    None => f.split('.').next().unwrap_or(f).to_owned(),
                },
            };
            // The core's message names the field first (`price: must be …`): the column says it.
            let message = e
                .message
                .strip_prefix(&format!("{field}: "))
                .map_or(e.message.clone(), str::to_owned);
            return Err(err(&column, message));
        }
        Ok(Change::Upsert(Box::new(item)))
    }
}

fn text(cell: Cell) -> Option<String> {
    match cell {
        Cell::Text(s) => Some(s),
        Cell::Null => None,
        Cell::Int(n) => Some(n.to_string()),
        Cell::Float(_, s) => Some(s),
        Cell::Bool(b) => Some(b.to_string()),
        Cell::Texts(vs) => Some(vs.into_iter().flatten().collect::<Vec<_>>().join(", ")),
    }
}

/// A column's value as an attribute value: NULL, blank text and an empty array are none; an
/// array is several values (NULL and blank elements left out, repeats once).
fn attribute_value(cell: Cell) -> Option<AttributeValue> {
    match cell {
        Cell::Texts(vs) => many(vs.into_iter().flatten()),
        other => text(other)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map(AttributeValue::One),
    }
}

fn many(values: impl IntoIterator<Item = String>) -> Option<AttributeValue> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let v = v.trim();
        if !v.is_empty() && !out.iter().any(|o| o == v) {
            out.push(v.to_owned());
        }
    }
    match out.len() {
        0 => None,
        1 => out.pop().map(AttributeValue::One),
        _ => Some(AttributeValue::Many(out)),
    }
}

/// The attributes in a json object: strings, numbers and booleans are values, an array is several
/// values, null is none. Anything else is an error.
fn json_attributes(json: &str) -> Result<Vec<(String, AttributeValue)>, String> {
    use serde_json::Value;
    let value: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("must be a JSON object of attributes (key to a value or a list)".into());
    };
    let scalar = |key: &str, v: Value| -> Result<Option<String>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            Value::Array(_) | Value::Object(_) => Err(format!(
                "the attribute {key:?} holds a nested list or object; a value must be a string, \
                 a number or a boolean"
            )),
        }
    };
    let mut out = Vec::new();
    for (key, v) in map {
        let values = match v {
            Value::Array(items) => items
                .into_iter()
                .map(|i| scalar(&key, i))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect(),
            v => scalar(&key, v)?.into_iter().collect::<Vec<_>>(),
        };
        if let Some(v) = many(values) {
            out.push((key, v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        Naming {
            id: "id".into(),
            updated_at: "updated_at".into(),
            deleted: None,
            ignore: Vec::new(),
        }
    }

    fn cols(list: &[(&str, Type)]) -> Vec<(String, Type)> {
        list.iter()
            .map(|(n, t)| ((*n).to_owned(), t.clone()))
            .collect()
    }

    fn shop() -> Vec<(String, Type)> {
        cols(&[
            ("id", Type::INT8),
            ("title", Type::VARCHAR),
            ("brand", Type::TEXT),
            ("category", Type::TEXT_ARRAY),
            ("price", Type::NUMERIC),
            ("in_stock", Type::INT4),
            ("created_at", Type::TIMESTAMPTZ),
            ("updated_at", Type::TIMESTAMPTZ),
            ("color", Type::TEXT),
            ("weight_g", Type::INT4),
            ("rating", Type::FLOAT4),
            ("organic", Type::BOOL),
            ("tags", Type::VARCHAR_ARRAY),
            ("sizes", Type::INT4_ARRAY),
            ("attributes", Type::JSONB),
            ("deleted", Type::BOOL),
        ])
    }

    fn now() -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000)
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.to_owned())
    }

    /// The shop's planned columns (no deleted flag: it becomes an attribute) and one full row.
    fn shop_row() -> (Plan, Vec<Cell>) {
        let plan = Plan::new(&shop(), &naming()).unwrap();
        let cells = vec![
            text("Oat Drink"),
            text("Oatly"),
            Cell::Texts(vec![Some("Dairy".into()), None, Some("Milk".into())]),
            text("2.50"),
            Cell::Int(0),
            text("2024-03-01T10:00:00.000000Z"),
            text("blue"),
            Cell::Int(1000),
            Cell::Float(4.5, "4.5".into()),
            Cell::Bool(true),
            Cell::Texts(vec![
                Some("vegan".into()),
                Some("vegan".into()),
                Some(" ".into()),
            ]),
            Cell::Texts(vec![Some("1".into()), Some("2".into())]),
            text(r#"{"origin": "sweden", "pack": ["carton", "1l"], "gone": null}"#),
            Cell::Bool(false),
        ];
        (plan, cells)
    }

    #[test]
    fn kinds_of_types_read_as_the_importer_reads_them() {
        for (ty, kind) in [
            (Type::TEXT, SqlKind::Text),
            (Type::BPCHAR, SqlKind::Text),
            (Type::INT2, SqlKind::Int),
            (Type::INT8, SqlKind::Int),
            (Type::FLOAT4, SqlKind::Float4),
            (Type::NUMERIC, SqlKind::Numeric),
            (Type::TIMESTAMPTZ, SqlKind::Timestamptz),
            (Type::DATE, SqlKind::Date),
            (Type::UUID, SqlKind::Uuid),
            (Type::JSONB, SqlKind::Json),
            (Type::TEXT_ARRAY, SqlKind::TextArray),
            (Type::NUMERIC_ARRAY, SqlKind::TextArray),
            (Type::JSONB_ARRAY, SqlKind::Unsupported),
            (Type::BYTEA, SqlKind::Unsupported),
            (Type::POINT, SqlKind::Unsupported),
        ] {
            assert_eq!(SqlKind::of(&ty), kind, "{ty}");
        }
    }

    #[test]
    fn columns_map_to_fields_attributes_and_casts() {
        let (plan, _) = shop_row();
        let roles: Vec<(&str, &Role)> = plan
            .columns
            .iter()
            .map(|c| (c.name.as_str(), &c.role))
            .collect();
        assert_eq!(
            roles,
            [
                ("title", &Role::Title),
                ("brand", &Role::Brand),
                ("category", &Role::Category),
                ("price", &Role::Price),
                ("in_stock", &Role::InStock),
                ("created_at", &Role::CreatedAt),
                ("color", &Role::Attribute),
                ("weight_g", &Role::Attribute),
                ("rating", &Role::Attribute),
                ("organic", &Role::Attribute),
                ("tags", &Role::Attribute),
                ("sizes", &Role::Attribute),
                ("attributes", &Role::Attributes),
                ("deleted", &Role::Attribute),
            ],
            "the id and updated-at columns are the cursor's, not attributes"
        );
        assert_eq!(
            plan.select_list(),
            "q.\"updated_at\"::text, q.\"id\"::text, q.\"title\"::text, q.\"brand\"::text, \
             q.\"category\"::text[], q.\"price\"::text, q.\"in_stock\"::int8, \
             to_char(q.\"created_at\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             q.\"color\"::text, q.\"weight_g\"::int8, q.\"rating\"::float4, q.\"organic\"::bool, \
             q.\"tags\"::text[], q.\"sizes\"::text[], q.\"attributes\"::text, q.\"deleted\"::bool"
        );
        assert_eq!(
            type_name(&Type::TIMESTAMPTZ),
            "\"pg_catalog\".\"timestamptz\""
        );
    }

    #[test]
    fn a_row_becomes_the_item_the_server_would_store() {
        let (plan, cells) = shop_row();
        let change = plan.map_row(Some("42".into()), "2024-03-01 10:00:00+00", cells, now());
        let Ok(Change::Upsert(item)) = change else {
            panic!("{change:?}")
        };
        let json = serde_json::to_value(&*item).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "42",
                "title": "Oat Drink",
                "brand": "Oatly",
                "category": "Dairy > Milk",
                "attributes": {
                    "color": "blue",
                    "weight_g": "1000",
                    "rating": "4.5",
                    "organic": "true",
                    "tags": "vegan",
                    "sizes": ["1", "2"],
                    "origin": "sweden",
                    "pack": ["carton", "1l"],
                    "deleted": "false",
                },
                "price": 2.5,
                "in_stock": false,
                "created_at": "2024-03-01T10:00:00.000000Z",
            })
        );
    }

    #[test]
    fn nulls_leave_fields_at_their_defaults_and_attributes_out() {
        let plan = Plan::new(&shop(), &naming()).unwrap();
        let mut cells = vec![Cell::Null; plan.columns.len()];
        cells[0] = text("Bare");
        let Ok(Change::Upsert(item)) = plan.map_row(Some("7".into()), "x", cells, now()) else {
            panic!()
        };
        assert_eq!(item.brand, None);
        assert_eq!(item.category, "");
        assert_eq!(item.price, None);
        assert!(item.in_stock, "in stock unless a column says otherwise");
        assert_eq!(item.created_at, None);
        assert!(item.attributes.is_empty(), "{:?}", item.attributes);
    }

    #[test]
    fn a_true_deleted_flag_is_a_deletion_whatever_else_the_row_holds() {
        let plan = Plan::new(
            &shop(),
            &Naming {
                deleted: Some("deleted".into()),
                ..naming()
            },
        )
        .unwrap();
        assert_eq!(plan.columns.last().unwrap().role, Role::Deleted);
        let mut cells = vec![Cell::Null; plan.columns.len()];
        *cells.last_mut().unwrap() = Cell::Bool(true);
        assert!(
            matches!(
                plan.map_row(Some("9".into()), "x", cells.clone(), now()),
                Ok(Change::Delete(id)) if id == "9"
            ),
            "not even a title is needed"
        );
        *cells.last_mut().unwrap() = Cell::Null;
        cells[0] = text("Back");
        assert!(matches!(
            plan.map_row(Some("9".into()), "x", cells, now()),
            Ok(Change::Upsert(_))
        ));
    }

    /// Each bad row names its id and the column to blame.
    #[test]
    fn a_row_that_cannot_be_an_item_names_its_id_and_column() {
        let cases: Vec<(&str, usize, Cell, &str)> = vec![
            ("title", 0, Cell::Null, "is NULL"),
            ("title", 0, text("  "), "must not be empty"),
            ("brand", 1, text(&"b".repeat(200)), "the limit is 128"),
            (
                "category",
                2,
                Cell::Texts(vec![Some("a > b".into())]),
                "contains '>'",
            ),
            ("price", 3, text("NaN"), "finite"),
            ("price", 3, text("-1"), "finite"),
            ("created_at", 5, text("yesterday"), "RFC 3339"),
            ("color", 6, text(&"c".repeat(129)), "the limit is 128"),
            (
                "tags",
                10,
                Cell::Texts(vec![Some("a\u{7}".into())]),
                "control",
            ),
            ("attributes", 12, text("[1, 2]"), "JSON object"),
            ("attributes", 12, text(r#"{"x": {"y": 1}}"#), "nested"),
            ("attributes", 12, text(r#"{"Bad Key": "v"}"#), "a-z, 0-9"),
            ("attributes", 12, text(r#"{"price": "v"}"#), "reserved"),
            (
                "attributes",
                12,
                text(r#"{"color": "red"}"#),
                "comes from column",
            ),
        ];
        for (column, at, cell, says) in cases {
            let (plan, mut cells) = shop_row();
            cells[at] = cell.clone();
            let e = plan
                .map_row(Some("p-1".into()), "x", cells, now())
                .expect_err(&format!("{column} = {cell:?}"));
            assert_eq!(e.row, "p-1", "{e}");
            assert_eq!(e.column, column, "{cell:?}: {e}");
            assert!(e.message.contains(says), "{cell:?}: {e}");
        }
        let (plan, cells) = shop_row();
        let e = plan
            .map_row(None, "2024-03-01 10:00:00+00", cells, now())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "row with updated_at = 2024-03-01 10:00:00+00: column \"id\": is NULL; every row \
             needs an id"
        );
        let (plan, cells) = shop_row();
        let e = plan
            .map_row(Some("has space".into()), "x", cells, now())
            .unwrap_err();
        assert_eq!(e.column, "id", "{e}");
    }

    /// Each bad result is refused before a row is read, naming the column.
    #[test]
    fn a_result_that_cannot_be_imported_is_refused_naming_the_column() {
        let with = |extra: (&str, Type)| {
            let mut c = shop();
            c.push((extra.0.to_owned(), extra.1));
            c
        };
        let replace = |name: &str, ty: Type| {
            shop()
                .into_iter()
                .map(|(n, t)| if n == name { (n, ty.clone()) } else { (n, t) })
                .collect::<Vec<_>>()
        };
        type Case = (Vec<(String, Type)>, Naming, &'static str);
        let cases: Vec<Case> = vec![
            (
                with(("photo", Type::BYTEA)),
                naming(),
                "column \"photo\" is bytea",
            ),
            (
                with(("specs", Type::JSONB)),
                naming(),
                "column \"specs\" is jsonb",
            ),
            (
                with(("Color", Type::TEXT)),
                naming(),
                "column \"Color\" cannot be an attribute",
            ),
            (with(("query", Type::TEXT)), naming(), "reserved"),
            (
                replace("price", Type::TEXT),
                naming(),
                "column \"price\" is text",
            ),
            (
                replace("title", Type::INT4),
                naming(),
                "column \"title\" is int4",
            ),
            (
                replace("in_stock", Type::TEXT),
                naming(),
                "column \"in_stock\" is text",
            ),
            (
                replace("created_at", Type::INT8),
                naming(),
                "column \"created_at\" is int8",
            ),
            (
                shop(),
                Naming {
                    id: "sku".into(),
                    ..naming()
                },
                "--id-column sku: no such column; the columns are: id, title",
            ),
            (
                shop(),
                Naming {
                    updated_at: "modified".into(),
                    ..naming()
                },
                "--updated-at modified: no such column",
            ),
            (
                shop(),
                Naming {
                    deleted: Some("color".into()),
                    ..naming()
                },
                "column \"color\" (--deleted-column) is text",
            ),
            (
                shop(),
                Naming {
                    updated_at: "tags".into(),
                    ..naming()
                },
                "(--updated-at) is _varchar",
            ),
            (
                shop(),
                Naming {
                    ignore: vec!["title".into()],
                    ..naming()
                },
                "no column named title",
            ),
            (
                shop(),
                Naming {
                    ignore: vec!["nope".into()],
                    ..naming()
                },
                "--ignore-column nope: no such column",
            ),
            (
                with(("color", Type::TEXT)),
                naming(),
                "two columns named \"color\"",
            ),
        ];
        for (columns, naming, says) in cases {
            let e = Plan::new(&columns, &naming).unwrap_err().to_string();
            assert!(e.contains(says), "wanted {says:?} in: {e}");
        }
        // Left out, a column of any type is fine.
        let ignored = Naming {
            ignore: vec!["photo".into()],
            ..naming()
        };
        Plan::new(&with(("photo", Type::BYTEA)), &ignored).unwrap();
    }

    #[test]
    fn an_updated_at_column_named_like_a_field_is_also_that_field() {
        let plan = Plan::new(
            &cols(&[
                ("id", Type::TEXT),
                ("title", Type::TEXT),
                ("created_at", Type::TIMESTAMP),
            ]),
            &Naming {
                updated_at: "created_at".into(),
                ..naming()
            },
        )
        .unwrap();
        assert_eq!(plan.columns[1].role, Role::CreatedAt);
        assert!(
            plan.select_list()
                .starts_with("q.\"created_at\"::text, q.\"id\"::text")
        );
    }
}

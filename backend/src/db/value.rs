//! Values crossing the database boundary, the same for both dialects:
//! [`Param`] goes in, [`Column`] comes out of a [`Row`], and [`FromColumn`]
//! turns a column into a Rust type with a typed error (a value that does not
//! fit its type means the stored data is corrupt, never a panic).

use std::error::Error;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{DbError, Result};

/// A statement parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    Bool(bool),
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl From<$t> for Param<'_> {
            fn from(v: $t) -> Self { Param::Int(i64::from(v)) }
        }
    )*};
}
int_param!(i64, i32, u32, u16, u8);

impl From<f64> for Param<'_> {
    fn from(v: f64) -> Self {
        Param::Real(v)
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Blob(v)
    }
}

impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Param::Blob(v)
    }
}

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Param::Null, Param::Text)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(v) => ValueRef::Integer(v),
            Param::Real(v) => ValueRef::Real(v),
            Param::Text(v) => ValueRef::Text(v.as_bytes()),
            Param::Blob(v) => ValueRef::Blob(v),
            Param::Bool(v) => ValueRef::Integer(i64::from(v)),
        }))
    }
}

/// PostgreSQL is strictly typed: the server says what type each placeholder
/// has (from the statement), and the parameter is written as that type when
/// it fits, else refused with a message naming both.
impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                Type::BOOL => match v {
                    0 => false.to_sql(ty, out),
                    1 => true.to_sql(ty, out),
                    _ => Err(format!("integer {v} is not a boolean").into()),
                },
                _ => Err(format!("an integer cannot be written as {ty}").into()),
            },
            Param::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (v as f32).to_sql(ty, out),
                _ => Err(format!("a real number cannot be written as {ty}").into()),
            },
            Param::Text(v) => v.to_sql(ty, out),
            Param::Blob(v) => v.to_sql(ty, out),
            Param::Bool(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// One column of a result row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Column<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    Bool(bool),
}

impl Column<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Column::Null => "null",
            Column::Int(_) => "integer",
            Column::Real(_) => "real",
            Column::Text(_) => "text",
            Column::Blob(_) => "blob",
            Column::Bool(_) => "boolean",
        }
    }
}

/// A result row of either dialect.
pub struct Row<'a> {
    inner: RowInner<'a>,
}

enum RowInner<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a postgres::Row),
}

impl<'a> Row<'a> {
    pub(super) fn sqlite(row: &'a rusqlite::Row<'a>) -> Row<'a> {
        Row {
            inner: RowInner::Sqlite(row),
        }
    }

    pub(super) fn postgres(row: &'a postgres::Row) -> Row<'a> {
        Row {
            inner: RowInner::Postgres(row),
        }
    }

    /// Column `idx` (from 0) as its raw value.
    pub fn column(&self, idx: usize) -> Result<Column<'_>> {
        match &self.inner {
            RowInner::Sqlite(row) => {
                let value = row
                    .get_ref(idx)
                    .map_err(|e| DbError::Corrupt(format!("column {idx}: {e}")))?;
                Ok(match value {
                    ValueRef::Null => Column::Null,
                    ValueRef::Integer(v) => Column::Int(v),
                    ValueRef::Real(v) => Column::Real(v),
                    ValueRef::Text(v) => Column::Text(std::str::from_utf8(v).map_err(|_| {
                        DbError::Corrupt(format!("column {idx} is not valid UTF-8"))
                    })?),
                    ValueRef::Blob(v) => Column::Blob(v),
                })
            }
            RowInner::Postgres(row) => pg_column(row, idx),
        }
    }

    /// Column `idx` (from 0) as `T`.
    pub fn get<T: FromColumn>(&self, idx: usize) -> Result<T> {
        let column = self.column(idx)?;
        T::from_column(column).map_err(|expected| {
            DbError::Corrupt(format!(
                "column {idx}: expected {expected}, found {}",
                column.kind()
            ))
        })
    }
}

fn pg_column<'r>(row: &'r postgres::Row, idx: usize) -> Result<Column<'r>> {
    let columns = row.columns();
    let ty = columns
        .get(idx)
        .ok_or_else(|| DbError::Corrupt(format!("no column {idx}")))?
        .type_()
        .clone();
    let bad = |e: postgres::Error| DbError::Corrupt(format!("column {idx}: {e}"));
    Ok(match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(idx)
            .map_err(bad)?
            .map_or(Column::Null, Column::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(idx)
            .map_err(bad)?
            .map_or(Column::Null, |v| Column::Int(i64::from(v))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(idx)
            .map_err(bad)?
            .map_or(Column::Null, |v| Column::Int(i64::from(v))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(idx)
            .map_err(bad)?
            .map_or(Column::Null, Column::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(idx)
            .map_err(bad)?
            .map_or(Column::Null, |v| Column::Real(f64::from(v))),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(idx)
            .map_err(bad)?
            .map_or(Column::Null, Column::Bool),
        Type::BYTEA => row
            .try_get::<_, Option<&[u8]>>(idx)
            .map_err(bad)?
            .map_or(Column::Null, Column::Blob),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
            .try_get::<_, Option<&str>>(idx)
            .map_err(bad)?
            .map_or(Column::Null, Column::Text),
        other => {
            return Err(DbError::Corrupt(format!(
                "column {idx} has type {other}, which the backend does not read (cast it in the query)"
            )));
        }
    })
}

/// A Rust type a column can be read as. The error is what was expected.
pub trait FromColumn: Sized {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str>;
}

impl FromColumn for i64 {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str> {
        match column {
            Column::Int(v) => Ok(v),
            _ => Err("an integer"),
        }
    }
}

impl FromColumn for u64 {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str> {
        match column {
            Column::Int(v) => u64::try_from(v).map_err(|_| "a non-negative integer"),
            _ => Err("a non-negative integer"),
        }
    }
}

impl FromColumn for u32 {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str> {
        match column {
            Column::Int(v) => u32::try_from(v).map_err(|_| "a 32-bit unsigned integer"),
            _ => Err("a 32-bit unsigned integer"),
        }
    }
}

impl FromColumn for i32 {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str> {
        match column {
            Column::Int(v) => i32::try_from(v).map_err(|_| "a 32-bit integer"),
            _ => Err("a 32-bit integer"),
        }
    }
}

impl FromColumn for f64 {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str> {
        match column {
            Column::Real(v) => Ok(v),
            // SQLite stores a REAL that happens to be whole as an integer
            // when the column has no declared affinity (an aggregate).
            Column::Int(v) => Ok(v as f64),
            _ => Err("a real number"),
        }
    }
}

impl FromColumn for bool {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str> {
        match column {
            Column::Bool(v) => Ok(v),
            Column::Int(0) => Ok(false),
            Column::Int(1) => Ok(true),
            _ => Err("a boolean"),
        }
    }
}

impl FromColumn for String {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str> {
        match column {
            Column::Text(v) => Ok(v.to_owned()),
            _ => Err("text"),
        }
    }
}

impl FromColumn for Vec<u8> {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str> {
        match column {
            Column::Blob(v) => Ok(v.to_vec()),
            _ => Err("bytes"),
        }
    }
}

impl<T: FromColumn> FromColumn for Option<T> {
    fn from_column(column: Column<'_>) -> Result<Self, &'static str> {
        match column {
            Column::Null => Ok(None),
            other => T::from_column(other).map(Some),
        }
    }
}

/// A column holding JSON text, parsed into `T`.
pub fn json<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| DbError::Corrupt(format!("column {idx} is not the JSON expected: {e}")))
}

/// `value` as JSON text for a TEXT column.
pub fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| DbError::database(format!("serializing {what}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_convert_or_say_what_was_expected() {
        assert_eq!(u64::from_column(Column::Int(5)), Ok(5));
        assert_eq!(
            u64::from_column(Column::Int(-1)),
            Err("a non-negative integer")
        );
        assert_eq!(bool::from_column(Column::Int(1)), Ok(true));
        assert_eq!(bool::from_column(Column::Int(2)), Err("a boolean"));
        assert_eq!(Option::<String>::from_column(Column::Null), Ok(None));
        assert_eq!(String::from_column(Column::Int(3)), Err("text"));
        assert_eq!(f64::from_column(Column::Int(3)), Ok(3.0));
    }

    #[test]
    fn options_become_null() {
        let none: Option<&str> = None;
        assert_eq!(Param::from(none), Param::Null);
        assert_eq!(Param::from(Some(3i64)), Param::Int(3));
        assert_eq!(Param::from(&Some("x".to_owned())), Param::Text("x"));
    }
}

//! Conversions between domain values and column values.

use chrono::{DateTime, Utc};
use pakkt_core::store::StoreError;
use serde::de::{DeserializeOwned, IntoDeserializer};

/// A timestamp as microseconds since the Unix epoch.
pub fn us(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A timestamp column back into a time.
pub fn from_us(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value).ok_or_else(|| corrupt(format!("timestamp {value} out of range")))
}

/// An optional timestamp column.
pub fn from_us_opt(value: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    value.map(from_us).transpose()
}

/// A counter as a column value: `u64` saturates at `i64::MAX`.
pub fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A counter column (never negative in a sound database).
pub fn uncount(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// An integer column into a narrower type, or a corruption error.
pub fn narrow<T: TryFrom<i64>>(value: i64, what: &str) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| corrupt(format!("{what} {value} out of range")))
}

/// A text column into any type that deserialises from a string (enums,
/// IDs, prefixes).
pub fn parse<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(text))
        .map_err(|e| corrupt(format!("{what} {text:?}: {e}")))
}

/// A value that no PAKKT build would have written.
pub fn corrupt(message: impl Into<String>) -> StoreError {
    let message: String = message.into();
    StoreError::Backend(format!("corrupt row: {message}").into())
}

/// A sqlx error as a store error, keeping the cause.
pub fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

//! How the shared types are stored: digests as their text, enums as their one spelling. A
//! value this version cannot read (a hand-edited row, say) is an error naming it, except an
//! unknown outcome, which reads as `failed` like an interrupted run.

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::model::{Digest, FileKind, ListedKind, Outcome, ProblemKind, Trigger};
use crate::spack;

impl ToSql for Digest {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Digest {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the ledger holds {what} {text:?}, which this version does not know")]
struct Unknown {
    what: &'static str,
    text: String,
}

macro_rules! spelled_sql {
    ($($ty:ty => $what:literal),+) => {$(
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                Self::parse(text).ok_or_else(|| {
                    FromSqlError::Other(Box::new(Unknown { what: $what, text: text.to_owned() }))
                })
            }
        }
    )+};
}

spelled_sql!(FileKind => "file kind", ProblemKind => "problem kind", ListedKind => "listed kind", Trigger => "trigger");

impl ToSql for Outcome {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Outcome {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Self::parse(value.as_str()?).unwrap_or(Self::Failed))
    }
}

/// SQL functions the ledger's queries use: `blob_path(digest)` is where the mirror keeps a
/// blob ([`spack::blob_path`]), so a query can join a spec's digests with the files recorded.
pub(super) fn register_functions(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "blob_path",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let digest: Digest = ctx.get(0)?;
            Ok(spack::blob_path(&digest))
        },
    )
}

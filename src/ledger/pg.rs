//! The PostgreSQL dialect of the ledger, for several gateway instances sharing one database (also
//! PostgreSQL-compatible databases such as 人大金仓 KingbaseES).
//!
//! Every instance consumes every ledger topic; the position rows of the partitions a batch
//! touches are locked (`SELECT … FOR UPDATE`, in one order, so two instances cannot deadlock)
//! in the transaction that applies it, so exactly one instance applies each message and the
//! others skip it. Many rows go in one statement (`INSERT … SELECT * FROM UNNEST(…)`).

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use futures::future::BoxFuture;
use tokio_postgres::types::{ToSql, Type};

use super::error::LedgerError;
use super::exec::{Cell, DbError, Dialect, Exec, Insert, Param, Rows, Ty};
use crate::db::{chain, pg_pool, redact};

fn db(e: tokio_postgres::Error) -> DbError {
    DbError::Db(chain(&e))
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(v) => v as &(dyn ToSql + Sync),
            Param::Text(v) => v as &(dyn ToSql + Sync),
            Param::Real(v) => v as &(dyn ToSql + Sync),
        })
        .collect()
}

fn cells(row: &tokio_postgres::Row) -> Result<Vec<Cell>, DbError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let t = column.type_();
        let cell = if *t == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int))
        } else if *t == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| Cell::Int(v.into())))
        } else if *t == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|v| Cell::Int(v.into())))
        } else if *t == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i).map(|v| v.map(Cell::Real))
        } else if *t == Type::FLOAT4 {
            row.try_get::<_, Option<f32>>(i)
                .map(|v| v.map(|v| Cell::Real(v.into())))
        } else if *t == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)
                .map(|v| v.map(|v| Cell::Int(v.into())))
        } else {
            row.try_get::<_, Option<String>>(i)
                .map(|v| v.map(Cell::Text))
        }
        .map_err(|e| DbError::Db(format!("column {}: {}", column.name(), chain(&e))))?;
        out.push(cell.unwrap_or(Cell::Null));
    }
    Ok(out)
}

/// `INSERT INTO table (columns) SELECT * FROM UNNEST($1::type[], …) tail`: all the rows in one
/// statement, each column bound as an array.
fn unnest_insert(insert: &Insert) -> String {
    let casts: Vec<String> = insert
        .table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| {
            let ty = match ty {
                Ty::Int => "bigint",
                Ty::Text => "text",
                Ty::Real => "float8",
            };
            format!("${}::{ty}[]", i + 1)
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) SELECT * FROM UNNEST({}) {}",
        insert.table.name,
        insert.table.column_list(),
        casts.join(", "),
        insert.tail
    )
}

/// The rows of an insert as one array a column, for [`unnest_insert`].
fn column_arrays(insert: &Insert) -> Vec<Box<dyn ToSql + Sync + Send + '_>> {
    /// Column `i` of every row, as `pick` reads its cell (a cell of another type is null).
    fn column<'a, T>(
        rows: &'a [Vec<Param>],
        i: usize,
        pick: fn(&'a Param) -> Option<T>,
    ) -> Vec<Option<T>> {
        rows.iter().map(|r| pick(&r[i])).collect()
    }
    let rows = &insert.rows;
    let mut arrays: Vec<Box<dyn ToSql + Sync + Send + '_>> = Vec::new();
    for (i, (_, ty)) in insert.table.columns.iter().enumerate() {
        arrays.push(match ty {
            Ty::Int => Box::new(column(rows, i, |p| match p {
                Param::Int(v) => *v,
                _ => None,
            })),
            Ty::Text => Box::new(column(rows, i, |p| match p {
                Param::Text(v) => v.as_deref(),
                _ => None,
            })),
            Ty::Real => Box::new(column(rows, i, |p| match p {
                Param::Real(v) => *v,
                _ => None,
            })),
        });
    }
    arrays
}

/// Statements on one PostgreSQL client or transaction.
pub struct PgExec<'a, C: GenericClient> {
    pub client: &'a C,
}

#[async_trait]
impl<C: GenericClient + Send + Sync> Exec for PgExec<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn query(&mut self, sql: &str, params: Vec<Param>) -> Result<Rows, DbError> {
        let stmt = self.client.prepare_cached(sql).await.map_err(db)?;
        let columns = stmt
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let rows = self.client.query(&stmt, &refs(&params)).await.map_err(db)?;
        Ok(Rows {
            columns,
            rows: rows.iter().map(cells).collect::<Result<_, _>>()?,
        })
    }

    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64, DbError> {
        let stmt = self.client.prepare_cached(sql).await.map_err(db)?;
        self.client.execute(&stmt, &refs(&params)).await.map_err(db)
    }

    async fn insert_rows(&mut self, inserts: Vec<Insert>) -> Result<(), DbError> {
        let inserts: Vec<Insert> = inserts.into_iter().filter(|i| !i.rows.is_empty()).collect();
        // Prepared first, in order (a statement not prepared yet is a round trip of its own), so
        // that the executions below go out in order too: each is sent when it is first polled,
        // while the server still works on the ones before it.
        let mut statements = Vec::with_capacity(inserts.len());
        for insert in &inserts {
            let stmt = self
                .client
                .prepare_cached(&unnest_insert(insert))
                .await
                .map_err(db)?;
            statements.push(stmt);
        }
        let client = self.client;
        let executions = inserts
            .iter()
            .zip(&statements)
            .map(|(insert, stmt)| async move {
                let arrays = column_arrays(insert);
                let params: Vec<&(dyn ToSql + Sync)> = arrays
                    .iter()
                    .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                client.execute(stmt, &params).await.map_err(db)
            });
        futures::future::try_join_all(executions).await?;
        Ok(())
    }

    async fn script(&mut self, sql: &str) -> Result<(), DbError> {
        self.client.batch_execute(sql).await.map_err(db)
    }
}

/// The PostgreSQL ledger's connection pool.
pub struct PgDb {
    pub url: String,
    pool: Pool,
}

impl PgDb {
    /// Connects; the schema is the caller's (see `store::migrate`).
    pub async fn connect(url: &str) -> Result<PgDb, LedgerError> {
        let pool = pg_pool(url, "")
            .await
            .map_err(|message| LedgerError::new(redact(url), message))?;
        Ok(PgDb {
            url: redact(url),
            pool,
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> LedgerError {
        LedgerError::new(&self.url, e.to_string())
    }

    /// Runs `f` in one transaction.
    pub async fn write<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: for<'e> FnOnce(&'e mut dyn Exec) -> BoxFuture<'e, Result<T, DbError>> + Send + 'static,
    {
        let mut client = self.pool.get().await.map_err(|e| self.error(chain(&e)))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error(chain(&e)))?;
        let result = {
            let mut exec = PgExec { client: &tx };
            f(&mut exec).await
        };
        match result {
            Ok(v) => {
                tx.commit().await.map_err(|e| self.error(chain(&e)))?;
                Ok(v)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// Runs `f` outside a transaction.
    pub async fn read<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: for<'e> FnOnce(&'e mut dyn Exec) -> BoxFuture<'e, Result<T, DbError>> + Send + 'static,
    {
        let client = self.pool.get().await.map_err(|e| self.error(chain(&e)))?;
        let mut exec = PgExec { client: &client };
        f(&mut exec).await.map_err(|e| self.error(e))
    }

    /// The schema: created or migrated, under an advisory lock so that instances starting
    /// together do not race.
    pub async fn prepare(&self) -> Result<(), LedgerError> {
        self.write(|ex| {
            Box::pin(async move {
                ex.execute("SELECT pg_advisory_xact_lock(7368656775)", vec![])
                    .await?;
                super::sql::migrate(ex).await
            })
        })
        .await
    }
}

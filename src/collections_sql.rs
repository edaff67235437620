//! `biomedclip_register_collection` / `biomedclip_drop_collection`: the checks run as the caller
//! through SPI, the registry row is written as the extension's owner.

use crate::extension_owner::{as_extension_owner, current_role_name, extension_info};
use crate::model_cache::raise;
use crate::pinned_search_path::with_pinned_search_path;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode::*;

#[pg_extern(sql = false)]
#[allow(clippy::too_many_arguments)]
fn biomedclip_register_collection(
    name: Option<&str>,
    table: Option<pg_sys::Oid>,
    id_column: Option<&str>,
    embedding_column: Option<&str>,
    display_columns: Option<Vec<String>>,
    thumbnail: Option<&str>,
    replace: Option<bool>,
) {
    let Some(name) = name.filter(|n| !n.trim().is_empty()) else {
        raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, "a collection needs a name".into());
    };
    let ext = extension_info();
    let role = current_role_name();
    check_collection(table, id_column, embedding_column, display_columns.as_deref(), thumbnail, &ext.schema_sql);
    let table = table.expect("checked above");
    let replace = replace.unwrap_or(false);
    let written = as_extension_owner(ext.owner, || {
        Spi::get_one_with_args::<bool>(
            "INSERT INTO biomedclip.collections AS c (name, table_oid, id_column, embedding_column, display_columns, thumbnail, registered_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT ON CONSTRAINT collections_pkey DO UPDATE SET table_oid = EXCLUDED.table_oid, id_column = EXCLUDED.id_column, \
               embedding_column = EXCLUDED.embedding_column, display_columns = EXCLUDED.display_columns, thumbnail = EXCLUDED.thumbnail, \
               registered_by = EXCLUDED.registered_by, registered_at = pg_catalog.now() \
             WHERE $8 RETURNING true",
            &[
                name.into(),
                table.into(),
                id_column.into(),
                embedding_column.into(),
                display_columns.into(),
                thumbnail.into(),
                role.as_str().into(),
                replace.into(),
            ],
        )
    });
    if !matches!(written, Ok(Some(true))) {
        ereport!(ERROR, ERRCODE_DUPLICATE_OBJECT, format!("collection \"{name}\" already exists"), "pass replace => true to re-register it");
    }
}

#[pg_extern(sql = false)]
fn biomedclip_drop_collection(name: &str) -> bool {
    let ext = extension_info();
    // As the caller: may this role drop it? (Its table's owner, a superuser, or, when the table is
    // gone, whoever registered it.)
    let allowed = with_pinned_search_path(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER) \
                    OR COALESCE(pg_catalog.pg_has_role(CURRENT_USER, k.relowner, 'USAGE'), c.registered_by OPERATOR(pg_catalog.=) CURRENT_USER) \
             FROM biomedclip.collections c LEFT JOIN pg_catalog.pg_class k ON k.oid OPERATOR(pg_catalog.=) c.table_oid \
             WHERE c.name OPERATOR(pg_catalog.=) $1",
            &[name.into()],
        )
    });
    match allowed {
        Ok(Some(true)) => {}
        Ok(Some(false)) => raise(ERRCODE_INSUFFICIENT_PRIVILEGE, format!("must be the owner of the table of collection \"{name}\" to drop it")),
        _ => return false,
    }
    as_extension_owner(ext.owner, || {
        Spi::get_one_with_args::<bool>("DELETE FROM biomedclip.collections c WHERE c.name OPERATOR(pg_catalog.=) $1 RETURNING true", &[name.into()])
    })
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// One catalog question, asked as the caller with search_path pinned.
fn ask<T: IntoDatum + FromDatum>(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Option<T> {
    crate::pinned_search_path::first_value(sql, args)
}

const COLUMN_TYPE: &str = "SELECT a.atttypid::pg_catalog.regtype::pg_catalog.text FROM pg_catalog.pg_attribute a \
     WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2 AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped";

/// Checks a collection definition as the caller (raises when it is not acceptable).
fn check_collection(table: Option<pg_sys::Oid>, id_column: Option<&str>, embedding_column: Option<&str>, display: Option<&[String]>, thumbnail: Option<&str>, ext: &str) {
    let (Some(table), Some(id_column), Some(embedding_column), Some(display)) = (table, id_column, embedding_column, display) else {
        raise(ERRCODE_NULL_VALUE_NOT_ALLOWED, "table, id_column, embedding_column and display_columns are required".into());
    };
    let superuser = unsafe { pg_sys::superuser() };
    let owns = ask::<bool>(
        "SELECT pg_catalog.pg_has_role(CURRENT_USER, c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1",
        &[table.into()],
    );
    let Some(owns) = owns else { raise(ERRCODE_UNDEFINED_TABLE, "the collection's table does not exist".into()) };
    let table_name = ask::<String>("SELECT $1::pg_catalog.regclass::pg_catalog.text", &[table.into()]).unwrap_or_default();
    if !owns && !superuser {
        raise(ERRCODE_INSUFFICIENT_PRIVILEGE, format!("must be the owner of table {table_name} to register it as a collection"));
    }
    let type_of = |col: &str| ask::<String>(COLUMN_TYPE, &[table.into(), col.into()]);
    for col in [id_column, embedding_column].into_iter().chain(display.iter().map(String::as_str)) {
        if type_of(col).is_none() {
            raise(ERRCODE_UNDEFINED_COLUMN, format!("column \"{col}\" does not exist in {table_name}"));
        }
    }
    let is_embedding = ask::<bool>(
        &format!("SELECT a.atttypid OPERATOR(pg_catalog.=) '{ext}.embedding'::pg_catalog.regtype FROM pg_catalog.pg_attribute a \
                  WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2"),
        &[table.into(), embedding_column.into()],
    );
    if is_embedding != Some(true) {
        raise(ERRCODE_DATATYPE_MISMATCH, format!("column \"{embedding_column}\" is {}, not embedding", type_of(embedding_column).unwrap_or_default()));
    }
    let Some(thumbnail) = thumbnail else { return };
    match type_of(thumbnail) {
        Some(t) if t == "bytea" => {}
        Some(t) => raise(ERRCODE_DATATYPE_MISMATCH, format!("thumbnail column \"{thumbnail}\" is {t}, not bytea")),
        None if !superuser => {
            ereport!(
                ERROR,
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                "only a superuser may register a thumbnail expression; name a bytea column instead",
                "every searcher runs the expression with their own privileges"
            );
        }
        None => {
            // Parsed and type-checked now (no row is read): it must give bytea.
            with_pinned_search_path(|| Spi::run(&format!("SELECT ({thumbnail})::pg_catalog.bytea FROM {table_name} AS t LIMIT 0")))
                .unwrap_or_else(|e| error!("{e}"));
        }
    }
}

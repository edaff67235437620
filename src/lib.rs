//! `biomedclip`: the PostgreSQL extension. Thin glue over `biomedclip-core`: SQL types,
//! functions, and (later) the index access method and settings.

use pgrx::prelude::*;

::pgrx::pg_module_magic!();

mod vector_datum;
mod vector_sql;

extension_sql_file!("../sql/vector_types.sql", name = "vector_types", bootstrap);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn embedding_text_round_trip() {
        let out = Spi::get_one::<String>("SELECT '[1, 2.5 ,-3e-7]'::embedding::text").unwrap();
        assert_eq!(out.as_deref(), Some("[1,2.5,-3e-7]"));
    }

    #[pg_test]
    fn l2_distance_hand_checked() {
        let d = Spi::get_one::<f64>("SELECT '[0,0]'::embedding <-> '[3,4]'::embedding").unwrap();
        assert_eq!(d, Some(5.0));
    }

    #[pg_test]
    #[should_panic(expected = "different vector dimensions 2 and 3")]
    fn dimension_mismatch_is_an_error() {
        Spi::get_one::<f64>("SELECT '[0,0]'::embedding <-> '[3,4,5]'::embedding").unwrap();
    }
}

/// Used by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}

//! `biomedclip`: the PostgreSQL extension. Thin glue over `biomedclip-core`: SQL types,
//! functions, and (later) the index access method and settings.

use pgrx::pg_sys;
use pgrx::prelude::*;

::pgrx::pg_module_magic!();

mod adapter_sql;
mod collections_sql;
mod dicom_sql;
mod drift_sql;
mod embed_sql;
mod extension_owner;
mod features_sql;
mod inference_client;
mod inference_supervisor;
mod ivf;
mod model_cache;
mod model_registry;
mod pinned_search_path;
mod probe_sql;
mod query_log_sql;
mod report_held;
mod search_sql;
mod settings;
mod slide_sql;
mod stored_weights;
mod text_cache;
mod tokenizer_preload;
mod training_progress;
mod training_runs;
mod vector_datum;
mod vector_sql;
mod zero_shot_sql;

extension_sql_file!("../sql/vector_types.sql", name = "vector_types", bootstrap);
extension_sql_file!("../sql/model_functions.sql", name = "model_functions", requires = ["vector_types"]);
extension_sql_file!("../sql/zero_shot.sql", name = "zero_shot", finalize);
extension_sql_file!("../sql/medical_images.sql", name = "medical_images", requires = ["model_functions"]);
extension_sql_file!("../sql/ivf.sql", name = "ivf", requires = ["vector_types"]);
extension_sql_file!("../sql/search.sql", name = "search", requires = ["model_functions", "medical_images"]);
extension_sql_file!("../sql/finetune.sql", name = "finetune", requires = ["search"]);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    ivf::register_settings();
    // Loaded by shared_preload_libraries: one inference service for the whole server.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        model_cache::mark_preloaded();
        inference_supervisor::register();
        tokenizer_preload::preload();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn embedding_text_round_trip() {
        let out = Spi::get_one::<String>("SELECT '[1, 2.5 ,-3e-7]'::embedding::text").unwrap();
        // Laid out as PostgreSQL's float4out (and pgvector) print it.
        assert_eq!(out.as_deref(), Some("[1,2.5,-3e-07]"));
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

    /// A deliberate Rust panic inside a SQL function, as any bug would be.
    #[pg_extern]
    fn biomedclip_test_panic(message: &str) -> i32 {
        panic!("{message}")
    }

    /// The panic comes back as an ordinary ERROR carrying its message; had it unwound across the
    /// FFI boundary the backend would have aborted and the harness would see a lost connection.
    #[pg_test]
    #[should_panic(expected = "deliberate test panic")]
    fn a_rust_panic_becomes_an_error() {
        Spi::get_one::<i32>("SELECT tests.biomedclip_test_panic('deliberate test panic')").unwrap();
    }

    /// After a panic was turned into an ERROR inside a subtransaction, the same backend goes on.
    #[pg_test]
    fn the_backend_survives_a_panic() {
        let pid_before = Spi::get_one::<i32>("SELECT pg_backend_pid()").unwrap();
        Spi::run(
            "DO $$ BEGIN
                 BEGIN PERFORM tests.biomedclip_test_panic('inside a savepoint');
                 EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'caught: %', SQLERRM; END;
             END $$",
        )
        .unwrap();
        assert_eq!(Spi::get_one::<i32>("SELECT pg_backend_pid()").unwrap(), pid_before);
        assert_eq!(Spi::get_one::<f64>("SELECT '[0,0]'::embedding <-> '[3,4]'::embedding").unwrap(), Some(5.0));
    }
}

/// Used by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// Runs in the test harness, which still sees the environment (sudo drops it for the server).
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        let mut options = Vec::new();
        for (var, setting) in [("ORT_DYLIB_PATH", "biomedclip.ort_library"), ("BIOMEDCLIP_TEST_MODEL_DIR", "biomedclip.model_dir")] {
            if let Ok(value) = std::env::var(var) {
                options.push(&*Box::leak(format!("{setting} = '{value}'").into_boxed_str()));
            }
        }
        options
    }
}

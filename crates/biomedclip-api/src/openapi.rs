//! The OpenAPI document, generated from the handlers' annotations (utoipa).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "biomedclip API", description = "Search, embedding and zero-shot over the biomedclip PostgreSQL extension. Every request runs as the PostgreSQL role named by its JWT, so the database's privileges and row-level security decide what it sees. Decision support and research tooling, not a medical device."),
    paths(
        crate::search_routes::search, crate::search_routes::feedback, crate::search_routes::collections, crate::search_routes::thumbnail,
        crate::embed_routes::embed_text, crate::embed_routes::embed_image, crate::embed_routes::zero_shot,
        crate::meta_routes::model, crate::meta_routes::drift, crate::meta_routes::healthz, crate::meta_routes::metrics,
    ),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()));
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

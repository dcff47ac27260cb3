//! The OpenAPI 3.1 description of the API, served at `GET /openapi.json` and generated from the
//! handlers' `#[utoipa::path]` attributes and the `ToSchema` types they read and answer with.
//!
//! Answers serialized from types outside the API layer are described by the schema types of
//! [`super::docs`].

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::docs::*;
use super::{admin, flows, records, views};

/// Adds the bearer scheme: tokens per adapter, department and admin (`shenguan token issue`).
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token per adapter, department or admin, issued with `shenguan token issue` or `POST /v1/admin/tokens`",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shenguan",
        description = "The data-exchange gateway for 审管联动: legacy systems push approval and supervision records; departments claim, return and answer what was routed to them. Errors are RFC 9457 problem documents (`application/problem+json`) whose `type` is `urn:shenguan:problem:<slug>`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::ingest::ingest,
        records::inbox,
        records::record,
        records::claim,
        records::give_back,
        records::feedback,
        records::route,
        records::unrouted,
        records::monthly,
        flows::forward,
        flows::inquiries,
        flows::create_inquiry,
        flows::inspections,
        flows::create_inspection,
        flows::commitments,
        flows::offline_push,
        flows::departments,
        flows::set_liaison,
        admin::list,
        admin::create,
        admin::revoke,
        admin::rotate,
        admin::audit,
        super::dlq::original,
        super::export::sgs,
        super::healthz,
        super::readyz,
        super::metrics,
        document,
    ),
    components(schemas(ProblemResponse, views::RecordView, views::EntryView)),
    modifiers(&BearerScheme),
    tags(
        (name = "ingest", description = "Legacy systems send their records"),
        (name = "departments", description = "The inbox, claims, returns and feedback"),
        (name = "flows", description = "Inquiries, inspections, commitments, forwarding, offline pushes, liaisons"),
        (name = "admin", description = "Routing, the report, tokens and the audit log"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_the_router_serves_is_in_the_document() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for (method, path) in super::super::ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is not in the OpenAPI document"
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, super::super::ROUTES.len(), "{doc:#}");
    }
}

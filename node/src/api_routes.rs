//! The HTTP API's route table: every endpoint of [`crate::api`],
//! [`crate::api_proofs`] and [`crate::api_page`] in one place (the handlers stay in
//! their rooms, which do not import this file, so none of them imports another in
//! a circle).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use crate::api::{self, ApiError, ApiState};
use crate::metrics::Metrics;
use crate::{api_page, api_proofs};

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(api::status))
        .route("/v1/genesis", get(api::genesis))
        .route("/v1/transactions", post(api::submit))
        .route("/v1/transactions/batch", post(api::submit_batch))
        .route("/v1/transactions/{hash}", get(api::transaction))
        .route("/v1/accounts/{address}", get(api::account))
        .route(
            "/v1/accounts/{address}/proof",
            get(api_proofs::account_proof),
        )
        .route(
            "/v1/transactions/{hash}/proof",
            get(api_proofs::transaction_proof),
        )
        .route("/v1/blocks/{height}", get(api::block))
        .route("/v1/blocks/{height}/fragments/{index}", get(api::fragment))
        .route("/v1/headers", get(api::headers))
        .route("/v1/own-fragments", get(api::own_fragments))
        .route("/metrics", get(api::metrics))
        .route("/v1/overview", get(api_page::overview))
        .route("/", get(api_page::page))
        .route("/assets/page.js", get(api_page::script))
        .route("/assets/page.css", get(api_page::style))
        .route("/lookup", get(api_page::lookup))
        .fallback(|| async {
            ApiError::not_found("no such endpoint: see the API table in node/src/api.rs")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here: see the API table in node/src/api.rs",
            )
        })
        .layer(axum::middleware::map_response_with_state(
            state.metrics.clone(),
            count_unavailable,
        ))
        .with_state(state)
}

/// Counts the 503 answers (for `api_unavailable_responses` and the page).
async fn count_unavailable(State(metrics): State<Metrics>, response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        metrics.api_unavailable.inc();
    }
    response
}

//! olc-gateway: the HTTP layer of `olc gateway`, an OpenAI-compatible API.
//!
//! A gateway holds a submitter key and an account at a coordinator, and turns
//! `/v1/completions`, `/v1/chat/completions` and `/v1/models` into signed jobs and catalog
//! look-ups. This crate is the HTTP side only: it reaches the network through the
//! [`Network`] trait, so it is tested with a scripted double and knows nothing of how jobs
//! are signed, matched or streamed.
//!
//! - [`network`]: the port to the network and its types;
//! - [`OlcNetwork`]: that port over a real OLC network (a coordinator and its workers);
//! - `api`: request bodies as read and answers as written, in OpenAI's JSON;
//! - `validate`: range checks and model names against the catalog;
//! - `template`: chat messages to a prompt with the model's Jinja chat template;
//! - `stop`: stop strings across text deltas; `answer`: a generation as answer pieces;
//! - `sse`: streamed answers; `routes`: the handlers; `auth`: API keys;
//! - `error`: OpenAI's error object, and the gateway's own errors.

mod answer;
pub mod api;
mod auth;
mod error;
pub mod network;
mod olc_network;
mod routes;
mod sse;
pub mod stop;
pub mod template;
pub mod validate;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use auth::api_keys_from_file;
pub use error::{ApiError, GatewayError};
pub use network::{
    CatalogModel, FinishReason, GenerateRequest, Generation, ModelKind, Network, NetworkError,
    StreamEvent,
};
pub use olc_network::{OlcNetwork, OlcOptions};

/// The largest request body read: a long prompt is well under it, and a caller cannot make
/// the gateway buffer more.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How a gateway serves.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// The API keys accepted (`Authorization: Bearer KEY`); `None` accepts any request,
    /// with or without a key. See [`api_keys_from_file`].
    pub api_keys: Option<HashSet<String>>,
}

/// The API as a router: what [`serve`] serves, and what tests drive.
pub fn router(network: Arc<dyn Network>, config: GatewayConfig) -> Router {
    let keys = Arc::new(config.api_keys);
    Router::new()
        .route("/v1/models", get(routes::list_models))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/chat/completions", post(routes::chat_completions))
        .fallback(routes::unknown_route)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            keys,
            auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(routes::AppState { network })
}

/// Serves the API on `listener` until `shutdown` resolves; requests in flight then finish
/// (streams included) before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    network: Arc<dyn Network>,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, keys = config.api_keys.is_some(), "gateway listening");
    }
    axum::serve(listener, router(network, config))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

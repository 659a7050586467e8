//! The handlers: each reads its request, checks it, asks the [`Network`], and answers.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::answer::{Answer, Piece};
use crate::api::Endpoint;
use crate::api::request::{ChatBody, Common, CompletionBody};
use crate::api::response::{Choice, Completion, Message, ModelEntry, ModelList, OlcInfo, Usage};
use crate::error::ApiError;
use crate::network::{GenerateRequest, ModelKind, Network, NetworkError};
use crate::sse::{self, ChunkMeta};
use crate::template::{self, SpecialTokens, TemplateError};
use crate::validate;

/// OpenAI's default `max_tokens` for `/v1/completions`; chat's default is the context.
const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) network: Arc<dyn Network>,
}

/// `GET /v1/models`.
pub(crate) async fn list_models(
    State(state): State<AppState>,
) -> Result<Json<ModelList>, ApiError> {
    let catalog = state.network.models().await?;
    let has_template = |name: &str| {
        catalog
            .iter()
            .any(|m| m.name == name && m.kind == ModelKind::Base && m.chat_template.is_some())
    };
    let data = catalog
        .iter()
        .map(|model| {
            let base_template = match &model.kind {
                ModelKind::Base => false,
                ModelKind::Adapter { base } => has_template(base),
            };
            ModelEntry::new(model, base_template)
        })
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = CompletionBody::parse(&read_body(body)?)?;
    let catalog = state.network.models().await?;
    let model = validate::resolve(&catalog, &body.common.model)?;
    let sampling = validate::sampling(&body.common, COMPLETIONS_DEFAULT_MAX_TOKENS)?;
    let request = generate_request(&model, body.prompt, sampling);
    generate(&state, Endpoint::Completions, &body.common, request).await
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = ChatBody::parse(&read_body(body)?)?;
    let catalog = state.network.models().await?;
    let model = validate::resolve(&catalog, &body.common.model)?;
    let sampling = validate::sampling(&body.common, model.base.context_length)?;
    let Some(chat_template) = model.chat_template() else {
        return Err(ApiError::invalid(
            "model",
            format!(
                "the model `{}` has no chat template: use /v1/completions with a prompt",
                body.common.model
            ),
        ));
    };
    let tokens = SpecialTokens {
        bos: model.bos_token(),
        eos: model.eos_token(),
    };
    let prompt =
        template::render(chat_template, &body.messages, tokens).map_err(|err| match err {
            TemplateError::Invalid(_) => ApiError::internal(err.to_string()),
            TemplateError::Refused(_) | TemplateError::Render(_) => {
                ApiError::invalid("messages", err.to_string())
            }
        })?;
    let request = generate_request(&model, prompt, sampling);
    generate(&state, Endpoint::Chat, &body.common, request).await
}

/// Any other path.
pub(crate) async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::unknown_route(method.as_str(), uri.path())
}

/// A known path with another method.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

/// The body, or the rejection in OpenAI's shape (413 over the limit).
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large()
        } else {
            ApiError::bad_body(format!("the request body could not be read: {rejection}"))
        }
    })
}

fn generate_request(
    model: &validate::Resolved<'_>,
    prompt: String,
    sampling: validate::Sampling,
) -> GenerateRequest {
    GenerateRequest {
        model: model.base.name.clone(),
        adapter: model.adapter.map(|adapter| adapter.name.clone()),
        prompt,
        max_tokens: sampling.max_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        seed: sampling.seed,
        stop: sampling.stop,
    }
}

/// A network error as the endpoint's caller is told it: a chat request's prompt is its
/// messages, rendered, so a prompt at fault is `messages` there.
fn for_endpoint(endpoint: Endpoint, err: NetworkError) -> NetworkError {
    match (endpoint, err) {
        (Endpoint::Chat, NetworkError::BadRequest { message, param })
            if param.as_deref() == Some("prompt") =>
        {
            NetworkError::BadRequest {
                message,
                param: Some("messages".into()),
            }
        }
        (_, err) => err,
    }
}

/// Submits the generation and answers, streamed or whole.
async fn generate(
    state: &AppState,
    endpoint: Endpoint,
    common: &Common,
    request: GenerateRequest,
) -> Result<Response, ApiError> {
    tracing::info!(
        model = %common.model,
        stream = common.stream,
        max_tokens = request.max_tokens,
        "generation requested"
    );
    let stop = request.stop.clone();
    let generation = state
        .network
        .generate(request)
        .await
        .map_err(|err| for_endpoint(endpoint, err))?;
    let id = format!("{}{}", endpoint.id_prefix(), generation.job_id);
    let mut answer = Answer::new(generation, stop);
    let created = unix_now();
    if common.stream {
        let meta = ChunkMeta {
            endpoint,
            id,
            created,
            model: common.model.clone(),
            include_usage: common.include_usage,
        };
        return Ok(sse::respond(meta, answer).into_response());
    }

    let mut text = String::new();
    let (finish_reason, completion_tokens, olc): (_, _, OlcInfo) = loop {
        match answer.next().await {
            Some(Piece::Text(piece)) => text.push_str(&piece),
            Some(Piece::End {
                finish_reason,
                completion_tokens,
                olc,
            }) => break (finish_reason, completion_tokens, olc),
            Some(Piece::Failed(err)) => return Err(err),
            None => return Err(ApiError::internal("the answer ended without its end")),
        }
    };
    let choice = match endpoint {
        Endpoint::Completions => Choice {
            index: 0,
            text: Some(text),
            message: None,
            finish_reason: finish_reason.as_str(),
            logprobs: None,
        },
        Endpoint::Chat => Choice {
            index: 0,
            text: None,
            message: Some(Message {
                role: "assistant",
                content: text,
            }),
            finish_reason: finish_reason.as_str(),
            logprobs: None,
        },
    };
    Ok(Json(Completion {
        id,
        object: endpoint.object(),
        created,
        model: common.model.clone(),
        choices: vec![choice],
        usage: Usage::new(answer.prompt_tokens, completion_tokens),
        olc,
    })
    .into_response())
}

/// Unix seconds now (0 on a clock before 1970, which only mislabels `created`).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

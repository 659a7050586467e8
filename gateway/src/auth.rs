//! API keys: who may use the gateway's account.
//!
//! The gateway signs and pays for every job it submits, so a gateway reachable by others
//! is configured with the keys it accepts; one on loopback for its owner can accept any.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, GatewayError};

/// Reads API keys: one a line, `#` starts a comment line, blank lines are skipped. A file
/// with no key is an error: it would lock every caller out, which is never what was meant.
pub fn api_keys_from_file(path: &Path) -> Result<HashSet<String>, GatewayError> {
    let fail = |reason: String| GatewayError::ApiKeys {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
    let keys = parse_api_keys(&text);
    if keys.is_empty() {
        return Err(fail("holds no key (one a line; `#` comments)".into()));
    }
    Ok(keys)
}

/// The keys of a key file's text.
fn parse_api_keys(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The bearer token of `Authorization: Bearer KEY` (the scheme in any case, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Middleware: with keys configured, a request must carry one of them.
pub(crate) async fn require_key(
    State(keys): State<Arc<Option<HashSet<String>>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(keys) = keys.as_ref() else {
        return next.run(request).await;
    };
    let header = request.headers().get(AUTHORIZATION);
    let token = header
        .and_then(|value| value.to_str().ok())
        .and_then(bearer);
    match token {
        Some(token) if keys.contains(token) => next.run(request).await,
        Some(_) => {
            ApiError::invalid_api_key("the API key is not one this gateway accepts").into_response()
        }
        None => {
            ApiError::invalid_api_key("an API key is required: send `Authorization: Bearer KEY`")
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_skip_comments_and_blanks() {
        let keys = parse_api_keys("# gateway keys\n\n  sk-one  \nsk-two\n#sk-not\n");
        assert_eq!(
            keys,
            HashSet::from(["sk-one".to_owned(), "sk-two".to_owned()])
        );
    }

    #[test]
    fn an_empty_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "# nothing yet\n\n").unwrap();
        assert!(matches!(
            api_keys_from_file(&path),
            Err(GatewayError::ApiKeys { .. })
        ));
        std::fs::write(&path, "k\n").unwrap();
        assert_eq!(api_keys_from_file(&path).unwrap().len(), 1);
        assert!(api_keys_from_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn bearer_tokens_are_read_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}

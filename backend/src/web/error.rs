//! The error type of every handler.
//!
//! A [`WebError`] becomes a response with its status and an [`ErrorMessage`]
//! extension but no body: the `envelope` middleware, which knows the request
//! id and whether the client asked the API or a page, writes the body. An
//! internal error is logged here with its detail (inside the request's span,
//! so with its id) and shown to the client only as "internal error".

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The message is shown to the client: it must say what is wrong with
    /// the request and never carry a secret.
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    /// Too much at once (503): try again in a moment.
    #[error("{0}")]
    Busy(&'static str),
    /// The detail is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl WebError {
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        WebError::Internal(detail.to_string())
    }
}

impl From<DbError> for WebError {
    fn from(e: DbError) -> Self {
        WebError::Internal(format!("database: {e}"))
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError::Internal(format!("template: {e}"))
    }
}

/// What the client is told; the envelope middleware renders it.
#[derive(Debug, Clone)]
pub(crate) struct ErrorMessage(pub Cow<'static, str>);

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, message): (StatusCode, Cow<'static, str>) = match self {
            WebError::BadRequest(message) => (StatusCode::BAD_REQUEST, Cow::Owned(message)),
            WebError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                Cow::Borrowed("authentication required"),
            ),
            WebError::Forbidden(message) => (StatusCode::FORBIDDEN, Cow::Borrowed(message)),
            WebError::NotFound(message) => (StatusCode::NOT_FOUND, Cow::Borrowed(message)),
            WebError::Conflict(message) => (StatusCode::CONFLICT, Cow::Borrowed(message)),
            WebError::Busy(message) => (StatusCode::SERVICE_UNAVAILABLE, Cow::Borrowed(message)),
            WebError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Cow::Borrowed("internal error"),
                )
            }
        };
        let mut response = status.into_response();
        response.extensions_mut().insert(ErrorMessage(message));
        response
    }
}

//! The one error type handlers return: a status, a stable code and a message, rendered as
//! `{"error":{"code","message"}}`. Internal causes are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
        }
    }

    /// An internal failure: logged with its cause, answered without it.
    pub fn internal(cause: impl std::fmt::Display) -> AppError {
        tracing::error!(code = "HB-INTERNAL", error = %cause, "request failed");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }
}

impl AppError {
    /// Out of space: nothing of the write was stored (`HB-STORE-FULL` is logged by the store,
    /// once per interval).
    pub fn store_full() -> AppError {
        AppError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "store-full",
            "the store is full; nothing of this request was stored. Reads keep working; retry \
             when /readyz answers 200",
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::internal(e)
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        AppError::internal(e)
    }
}

impl From<super::store::QueryError> for AppError {
    fn from(e: super::store::QueryError) -> Self {
        AppError::internal(e)
    }
}

impl From<super::store::WriteError> for AppError {
    fn from(e: super::store::WriteError) -> Self {
        match e {
            super::store::WriteError::Full(_) => AppError::store_full(),
            super::store::WriteError::Sql(e) => AppError::internal(e),
        }
    }
}

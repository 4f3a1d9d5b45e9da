//! Errors as the OpenAI API returns them: a status and `{"error": {"message", "type", "param",
//! "code"}}`, so that clients print the message instead of failing to parse the body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mismatch_openai::api::{ErrorBody, ErrorObject};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400: the request is malformed or a parameter is out of range.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), param: None, code: None }
    }

    /// 400 naming the parameter at fault.
    pub fn param(param: &'static str, message: impl Into<String>) -> Self {
        Self { param: Some(param), ..Self::invalid(message) }
    }

    pub fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into(), param: None, code: Some(code) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into(), param: None, code: None }
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            404 => "not_found_error",
            413 => "request_too_large",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                message: self.message.clone(),
                kind: self.kind().into(),
                param: self.param.map(Into::into),
                code: self.code.map(Into::into),
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<mismatch_models::Error> for ApiError {
    fn from(e: mismatch_models::Error) -> Self {
        match e {
            mismatch_models::Error::Usage(m) => Self::invalid(m),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<candle_core::Error> for ApiError {
    fn from(e: candle_core::Error) -> Self {
        Self::internal(e.to_string())
    }
}

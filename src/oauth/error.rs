//! The protocol's error codes, in one place, and the error type every core operation returns.
//!
//! `description` is safe to show a client; `cause` is the underlying error (a storage failure,
//! say), kept as a typed source that the HTTP layer logs and never renders.

use std::fmt;

/// RFC error codes. The wire string comes from [`ErrorCode::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    // RFC 6749 §4.1.2.1 and §5.2
    /// A parameter is missing, repeated, malformed or unsupported.
    InvalidRequest,
    /// Client authentication failed (unknown client, wrong or missing secret).
    InvalidClient,
    /// The code, refresh token or PKCE verifier is invalid, expired, revoked or not this client's.
    InvalidGrant,
    /// The client may not use this grant or response type.
    UnauthorizedClient,
    /// The server does not know this `grant_type`.
    UnsupportedGrantType,
    /// The server does not support this `response_type`.
    UnsupportedResponseType,
    /// The scope is unknown, malformed, or beyond what the client (or grant) allows.
    InvalidScope,
    /// The user (or the server) denied the request.
    AccessDenied,
    /// Something failed on our side; the details are logged, never sent.
    ServerError,
    /// The server is overloaded or down for maintenance.
    TemporarilyUnavailable,
    // RFC 8628 §3.5 (the token endpoint, device code grant)
    /// The user has not yet answered the device authorization request; keep polling.
    AuthorizationPending,
    /// Polling faster than the interval allows; keep polling, 5 seconds slower.
    SlowDown,
    /// The device code has expired; the device must start a new request.
    ExpiredToken,
    // RFC 8707 §2
    /// The requested `resource` is not one this client may get tokens for.
    InvalidTarget,
    // RFC 6750 §3.1
    /// The bearer token is missing, expired, revoked or malformed.
    InvalidToken,
    /// The token lacks the scope the request needs.
    InsufficientScope,
    // RFC 9449 §5, §7.1, §8
    /// The DPoP proof is missing where required, malformed, for another request, too old,
    /// replayed, or its key does not match the token's.
    InvalidDpopProof,
    /// The DPoP proof must carry the server nonce given in the `DPoP-Nonce` header.
    UseDpopNonce,
    // RFC 7009 §2.2.1
    /// The server cannot revoke this type of token.
    UnsupportedTokenType,
    // OpenID Connect Core §3.1.2.6
    /// `prompt=none`, but the user would have to log in.
    LoginRequired,
    /// `prompt=none`, but the user would have to approve the client.
    ConsentRequired,
    /// `prompt=none`, but the user would have to do something else first (a second factor).
    InteractionRequired,
    /// OpenID Connect Unmet Authentication Requirements 1.0: the request asks for an essential
    /// `acr` the user cannot reach (they have no second factor to show).
    UnmetAuthenticationRequirements,
    /// The `request` parameter (request objects) is not supported.
    RequestNotSupported,
    /// The `request_uri` parameter names something other than a pushed request (request
    /// objects by reference are not supported).
    RequestUriNotSupported,
    /// The `registration` parameter is not supported.
    RegistrationNotSupported,
    /// The `request_uri` is unknown, expired, used, or another client's (RFC 9126 §4).
    InvalidRequestUri,
    // RFC 7591 §3.2.2
    /// A redirect URI is invalid or not allowed by the registration policy.
    InvalidRedirectUri,
    /// A metadata value is invalid or not allowed by the registration policy.
    InvalidClientMetadata,
    /// Software statements are not supported.
    InvalidSoftwareStatement,
    // The admin API (not OAuth codes; carried in problem details)
    /// The addressed record does not exist.
    NotFound,
    /// The record would clash with an existing one (a taken username).
    Conflict,
    /// Too many requests from this client or address (HTTP 429 with `Retry-After`).
    RateLimited,
}

impl ErrorCode {
    /// Every code, for the tests that drive each one through every group of endpoints.
    /// (A new code goes here too, beside its `as_str`.)
    pub const ALL: [ErrorCode; 33] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidClient,
        ErrorCode::InvalidGrant,
        ErrorCode::UnauthorizedClient,
        ErrorCode::UnsupportedGrantType,
        ErrorCode::UnsupportedResponseType,
        ErrorCode::InvalidScope,
        ErrorCode::AccessDenied,
        ErrorCode::ServerError,
        ErrorCode::TemporarilyUnavailable,
        ErrorCode::AuthorizationPending,
        ErrorCode::SlowDown,
        ErrorCode::ExpiredToken,
        ErrorCode::InvalidTarget,
        ErrorCode::InvalidToken,
        ErrorCode::InsufficientScope,
        ErrorCode::UnsupportedTokenType,
        ErrorCode::InvalidDpopProof,
        ErrorCode::UseDpopNonce,
        ErrorCode::LoginRequired,
        ErrorCode::ConsentRequired,
        ErrorCode::InteractionRequired,
        ErrorCode::UnmetAuthenticationRequirements,
        ErrorCode::RequestNotSupported,
        ErrorCode::RequestUriNotSupported,
        ErrorCode::RegistrationNotSupported,
        ErrorCode::InvalidRequestUri,
        ErrorCode::InvalidRedirectUri,
        ErrorCode::InvalidClientMetadata,
        ErrorCode::InvalidSoftwareStatement,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::UnmetAuthenticationRequirements => "unmet_authentication_requirements",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::RequestUriNotSupported => "request_uri_not_supported",
            ErrorCode::RegistrationNotSupported => "registration_not_supported",
            ErrorCode::InvalidRequestUri => "invalid_request_uri",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::InvalidSoftwareStatement => "invalid_software_statement",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
        }
    }
}

/// A protocol outcome other than success.
#[derive(Debug)]
pub struct Error {
    pub code: ErrorCode,
    /// Human-readable, client-safe text for `error_description`.
    pub description: String,
    /// The underlying error, for logs only (also [`std::error::Error::source`]).
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// For `rate_limited`: how long the caller should wait.
    pub retry_after: Option<std::time::Duration>,
    /// For `use_dpop_nonce`: the nonce to retry with (RFC 9449 §8, the `DPoP-Nonce` header).
    pub dpop_nonce: Option<String>,
}

impl Error {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Error {
        Error {
            code,
            description: description.into(),
            cause: None,
            retry_after: None,
            dpop_nonce: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidGrant, description)
    }

    /// Too many requests: wait `retry_after`.
    pub fn rate_limited(retry_after: std::time::Duration) -> Error {
        Error {
            retry_after: Some(retry_after),
            ..Error::new(ErrorCode::RateLimited, "too many requests; retry later")
        }
    }

    pub fn invalid_client() -> Error {
        Error::new(ErrorCode::InvalidClient, "client authentication failed")
    }

    /// A failure on our side, caused by `cause` (an error value, or a message).
    pub fn server_error(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error {
            code: ErrorCode::ServerError,
            description: "internal error".into(),
            cause: Some(cause.into()),
            retry_after: None,
            dpop_nonce: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

/// How long a client should wait when the database is unreachable.
const STORE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl From<crate::store::StoreError> for Error {
    fn from(err: crate::store::StoreError) -> Error {
        match err {
            // Not our bug, and likely over soon (a database restart, a failover, a full pool).
            crate::store::StoreError::Unavailable(_) => Error {
                code: ErrorCode::TemporarilyUnavailable,
                description: "the service is temporarily unavailable; retry shortly".into(),
                cause: Some(err.into()),
                retry_after: Some(STORE_RETRY_AFTER),
                dpop_nonce: None,
            },
            // Room frees as entries expire: say when.
            crate::store::StoreError::Full { retry_after, .. } => Error {
                code: ErrorCode::TemporarilyUnavailable,
                description: format!("the service is busy; retry in {} seconds", retry_after.as_secs().max(1)),
                cause: Some(err.into()),
                retry_after: Some(retry_after),
                dpop_nonce: None,
            },
            // The caller's fault, not ours: nothing to log as a failure.
            crate::store::StoreError::InvalidText(_) => {
                Error::invalid_request("the request may not contain a NUL character")
            }
            _ => Error::server_error(err),
        }
    }
}

impl From<crate::keys::KeyError> for Error {
    fn from(err: crate::keys::KeyError) -> Error {
        Error::server_error(err)
    }
}

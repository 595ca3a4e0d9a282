//! What a client may be given, each named once: the grant types and the token-endpoint
//! authentication methods, with their wire names (RFC 6749, RFC 7591), their names on the CLI
//! and in the pages' forms, a label for people, and who may give them to a client they register
//! themselves. Every surface reads its list from here: the CLI's `--grant-type` values, the
//! admin API's grant enum, dynamic registration and Client ID Metadata Documents, the
//! applications pages and the console, and the discovery document.

use crate::config::RegistrationPolicy;
use crate::store::{ClientType, GrantType};

/// Who may give a grant to a client they register themselves (the applications pages, dynamic
/// registration, Client ID Metadata Documents). Operators (the CLI, the admin API, the console)
/// may give any.
#[derive(Clone, Copy, Debug)]
pub enum SelfService {
    Anyone,
    /// A confidential client, where the registration policy allows it.
    ConfidentialIf(fn(&RegistrationPolicy) -> bool),
}

/// One grant type.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    pub grant: GrantType,
    /// The `grant_type` value (RFC 6749 §4, RFC 8628 §3.4, RFC 8693 §2.1).
    pub wire: &'static str,
    /// The CLI's `--grant-type` value (also how the store spells it).
    pub cli: &'static str,
    /// The pages' checkbox (`grant_<form>`).
    pub form: &'static str,
    pub label: &'static str,
    pub self_service: SelfService,
}

/// The `grant_type` of the device authorization grant (RFC 8628 §3.4).
pub(crate) const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The `grant_type` of token exchange (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Every grant type, in the order surfaces list them.
pub(crate) static GRANTS: [Grant; 5] = [
    Grant {
        grant: GrantType::AuthorizationCode,
        wire: "authorization_code",
        cli: "authorization-code",
        form: "authorization_code",
        label: "Authorization code (users log in)",
        self_service: SelfService::Anyone,
    },
    Grant {
        grant: GrantType::ClientCredentials,
        wire: "client_credentials",
        cli: "client-credentials",
        form: "client_credentials",
        label: "Client credentials (the app acts for itself)",
        self_service: SelfService::ConfidentialIf(|policy| policy.allow_client_credentials),
    },
    Grant {
        grant: GrantType::RefreshToken,
        wire: "refresh_token",
        cli: "refresh-token",
        form: "refresh_token",
        label: "Refresh token",
        self_service: SelfService::Anyone,
    },
    Grant {
        grant: GrantType::DeviceCode,
        wire: DEVICE_CODE,
        cli: "device-code",
        form: "device_code",
        label: "Device code (users approve a TV, console or CLI from another screen; no redirect URI)",
        self_service: SelfService::Anyone,
    },
    Grant {
        grant: GrantType::TokenExchange,
        wire: TOKEN_EXCHANGE,
        cli: "token-exchange",
        form: "token_exchange",
        label: "Token exchange (the app trades a user's token for one for another service, RFC 8693)",
        self_service: SelfService::ConfidentialIf(|policy| policy.allow_token_exchange),
    },
];

/// The order the pages' and the console's forms list the grants in: what people pick most
/// first, the grants an app acts on its own with last.
const FORM_ORDER: [GrantType; 5] = [
    GrantType::AuthorizationCode,
    GrantType::RefreshToken,
    GrantType::DeviceCode,
    GrantType::ClientCredentials,
    GrantType::TokenExchange,
];

/// Every grant, in the forms' order.
pub fn in_form_order() -> impl Iterator<Item = &'static Grant> {
    FORM_ORDER.iter().map(|g| grant(*g))
}

/// The catalogue's entry for `grant`.
pub fn grant(grant: GrantType) -> &'static Grant {
    GRANTS
        .iter()
        .find(|g| g.grant == grant)
        .expect("every grant type is in the catalogue")
}

/// The `grant_type` value of `grant`.
pub(crate) fn wire(grant: GrantType) -> &'static str {
    self::grant(grant).wire
}

/// The grant a `grant_type` value names.
pub(crate) fn grant_by_wire(wire: &str) -> Option<&'static Grant> {
    GRANTS.iter().find(|g| g.wire == wire)
}

impl Grant {
    /// Whether someone other than an operator may give this grant to a client of `client_type`.
    pub(crate) fn self_service(&self, client_type: ClientType, policy: &RegistrationPolicy) -> bool {
        match self.self_service {
            SelfService::Anyone => true,
            SelfService::ConfidentialIf(allowed) => client_type == ClientType::Confidential && allowed(policy),
        }
    }

    /// Whether this grant may be offered to people registering their own apps at all.
    pub(crate) fn offered_to_people(&self, policy: &RegistrationPolicy) -> bool {
        self.self_service(ClientType::Confidential, policy)
    }
}

/// One way a client authenticates at the token endpoint (RFC 7591 `token_endpoint_auth_method`).
#[derive(Clone, Copy, Debug)]
pub struct AuthMethod {
    pub wire: &'static str,
    /// The kind of client that uses it.
    pub client_type: ClientType,
    /// Whether the client registers public keys (and no secret) for it.
    pub keys: bool,
    /// Whether it authenticates at the introspection endpoint (a public client may not
    /// introspect: it cannot prove who asks).
    pub introspects: bool,
}

/// Every method, in the order the discovery document lists them.
pub(crate) static AUTH_METHODS: [AuthMethod; 4] = [
    AuthMethod {
        wire: "client_secret_basic",
        client_type: ClientType::Confidential,
        keys: false,
        introspects: true,
    },
    AuthMethod {
        wire: "client_secret_post",
        client_type: ClientType::Confidential,
        keys: false,
        introspects: true,
    },
    AuthMethod {
        wire: PRIVATE_KEY_JWT,
        client_type: ClientType::Confidential,
        keys: true,
        introspects: true,
    },
    AuthMethod {
        wire: "none",
        client_type: ClientType::Public,
        keys: false,
        introspects: false,
    },
];

/// `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9).
pub(crate) const PRIVATE_KEY_JWT: &str = "private_key_jwt";

/// The method a `token_endpoint_auth_method` value names.
pub(crate) fn auth_method(wire: &str) -> Option<&'static AuthMethod> {
    AUTH_METHODS.iter().find(|m| m.wire == wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grant_is_listed_once_and_the_cli_name_is_the_stored_one() {
        for grant in GRANTS {
            assert_eq!(GRANTS.iter().filter(|g| g.grant == grant.grant).count(), 1);
            let stored = serde_json::to_value(grant.grant).unwrap();
            assert_eq!(stored, grant.cli, "the store spells {:?} as the CLI does", grant.grant);
            assert_eq!(super::grant(grant.grant).wire, grant.wire);
            assert_eq!(grant_by_wire(grant.wire).unwrap().grant, grant.grant);
            assert_eq!(
                FORM_ORDER.iter().filter(|g| **g == grant.grant).count(),
                1,
                "the forms list every grant once"
            );
        }
    }
}

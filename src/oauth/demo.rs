//! What `tessera serve --dev` sets up on an empty store: a demo user and a demo app registered
//! for the playground, so that a newcomer can log in, consent, get tokens and call an API
//! within a minute of the first command. The password and the client secret are random and
//! returned once, to be printed; only their hashes are stored, as for any user and app.

use super::audit::Caller;
use super::client::NewClient;
use super::{random_token, Error, Provider};
use crate::store::{ClientType, GrantType};

/// The demo user's name.
pub const DEMO_USERNAME: &str = "demo";
/// The demo app's name.
pub const DEMO_APP_NAME: &str = "Playground demo";
/// The scopes the demo app may ask for: sign-in and the example resource server's.
const DEMO_SCOPE: &str = "openid profile email read write";

/// The demo user and app, with the secrets shown only this once.
pub struct Demo {
    pub username: String,
    pub password: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
}

impl Provider {
    /// Whether the store holds no user and no client yet (a first start).
    pub async fn is_unused(&self) -> Result<bool, Error> {
        Ok(self.users_page(None, 1).await?.items.is_empty() && self.clients_page(None, 1).await?.items.is_empty())
    }

    /// Whether at least one user exists.
    pub async fn has_users(&self) -> Result<bool, Error> {
        Ok(!self.users_page(None, 1).await?.items.is_empty())
    }

    /// Creates the demo user and the playground's demo app when the store is unused; `None`
    /// when it already holds users or clients (nothing is changed then).
    pub async fn seed_demo(&self) -> Result<Option<Demo>, Error> {
        if !self.is_unused().await? {
            return Ok(None);
        }
        let redirect_uri = self.url(super::endpoints::PLAYGROUND_CALLBACK);
        let (client, secret) = self
            .clients
            .register_client(
                &Caller::system(),
                NewClient {
                    name: DEMO_APP_NAME.to_string(),
                    client_type: ClientType::Confidential,
                    grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
                    redirect_uris: vec![redirect_uri.clone()],
                    scope: DEMO_SCOPE.to_string(),
                    resources: Vec::new(),
                    access_token_ttl: None,
                    refresh_token_ttl: None,
                    skip_consent: false,
                    owner_user_id: None,
                    post_logout_redirect_uris: Vec::new(),
                    id_token_signed_response_alg: None,
                    admin: false,
                    keys: None,
                    policy: Default::default(),
                },
            )
            .await?;
        let password = random_token(12);
        let user = self
            .accounts
            .create_user(&Caller::system(), DEMO_USERNAME, &password, None)
            .await?;
        Ok(Some(Demo {
            username: user.username,
            password,
            client_id: client.client_id,
            client_secret: secret.ok_or_else(|| Error::server_error("a confidential client without a secret"))?,
            redirect_uri,
        }))
    }
}

//! `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4-3.5): the device
//! polls with its device code until the user has answered on the verification page.
//!
//! Each poll is one atomic update of the device authorization ([`crate::store::DeviceStore`]):
//! the pacing (`slow_down`), the answer, and the single redemption are decided on the record
//! as it stands, so parallel polls on any number of nodes redeem a code at most once.

use std::sync::Mutex;

use crate::oauth::dpop::Proof;
use crate::oauth::token::TokenResponse;
use crate::oauth::token::Tokens;
use crate::oauth::{now, secret_hash, Error, ErrorCode};
use crate::store::{ClientRecord, DeviceRecord, DeviceStatus};

/// How much `interval` grows with each `slow_down` (RFC 8628 §3.5).
const SLOW_DOWN_SECS: u64 = 5;

/// What one poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    /// The code is another client's.
    OtherClient,
    /// Already exchanged for tokens.
    Redeemed,
    Expired,
    Denied,
    Pending,
    /// Polled sooner than `interval` after the last poll; the interval has grown.
    SlowDown,
    /// Approved, and now redeemed by this poll.
    Approved,
}

/// One poll by `client_id` at `now_ms`: its outcome, and whether the record changed.
fn poll(device: &mut DeviceRecord, client_id: &str, now_ms: i64) -> (Poll, bool) {
    if device.client_id != client_id {
        return (Poll::OtherClient, false);
    }
    if device.redeemed {
        return (Poll::Redeemed, false);
    }
    if device.expires_at <= now_ms / 1000 {
        return (Poll::Expired, false);
    }
    match device.status {
        DeviceStatus::Denied => (Poll::Denied, false),
        DeviceStatus::Approved => {
            device.redeemed = true;
            (Poll::Approved, true)
        }
        DeviceStatus::Pending => {
            let too_soon = device
                .last_poll_ms
                .is_some_and(|last| now_ms - last < (device.interval * 1000) as i64);
            device.last_poll_ms = Some(now_ms);
            if too_soon {
                device.interval += SLOW_DOWN_SECS;
                (Poll::SlowDown, true)
            } else {
                (Poll::Pending, true)
            }
        }
    }
}

impl Tokens {
    /// Answers one poll with a device code: tokens once (the first poll after the user
    /// approved), else the RFC 8628 §3.5 error that says what to do next.
    pub(super) async fn device_code_grant(
        &self,
        client: &ClientRecord,
        device_code: &str,
        proof: Option<&Proof>,
    ) -> Result<TokenResponse, Error> {
        let now_ms = crate::clock::now_ms();
        let outcome = Mutex::new(None);
        let device = self
            .devices
            .update_device(&secret_hash(device_code), &|device| {
                let (found, changed) = poll(device, &client.client_id, now_ms);
                *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
                changed
            })
            .await?;
        let outcome = outcome.into_inner().unwrap_or_else(|p| p.into_inner());
        let (Some(device), Some(outcome)) = (device, outcome) else {
            return Err(Error::invalid_grant("the device code is invalid"));
        };
        match outcome {
            Poll::OtherClient => Err(Error::invalid_grant("the device code was issued to another client")),
            Poll::Redeemed => Err(Error::invalid_grant("the device code was already used")),
            Poll::Expired => Err(Error::new(
                ErrorCode::ExpiredToken,
                "the device code has expired; start a new device authorization",
            )),
            Poll::Denied => Err(Error::new(ErrorCode::AccessDenied, "the user denied the request")),
            Poll::Pending => Err(Error::new(
                ErrorCode::AuthorizationPending,
                "the user has not answered yet; keep polling",
            )),
            Poll::SlowDown => Err(Error::new(
                ErrorCode::SlowDown,
                format!(
                    "polling too fast; wait at least {} seconds between polls",
                    device.interval
                ),
            )),
            Poll::Approved => {
                let grant = match &device.grant_id {
                    Some(grant_id) => self.grants.get_grant(grant_id).await?,
                    None => None,
                };
                // The user may have withdrawn the approval on the authorized-apps page since.
                let Some(grant) = grant.filter(|g| !g.revoked) else {
                    return Err(Error::invalid_grant("the authorization was revoked"));
                };
                // Approved: now the proof is spent (a pending poll spends nothing).
                let dpop_jkt = self.dpop.spend_grant_proof(proof).await?;
                self.issue_user_tokens(client, &grant, None, now(), dpop_jkt).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> DeviceRecord {
        DeviceRecord {
            user_code_hash: [0; 32],
            client_id: "c".into(),
            scope: "read".into(),
            audience: "a".into(),
            expires_at: 1_000,
            interval: 5,
            status: DeviceStatus::Pending,
            user_id: None,
            auth_time: None,
            grant_id: None,
            last_poll_ms: None,
            redeemed: false,
        }
    }

    #[test]
    fn polling_sooner_than_the_interval_slows_down_by_five_seconds_each_time() {
        let mut device = pending();
        assert_eq!(poll(&mut device, "c", 100_000), (Poll::Pending, true));
        assert_eq!(poll(&mut device, "c", 104_999), (Poll::SlowDown, true));
        assert_eq!(device.interval, 10);
        // RFC 8628 §3.5: the new interval holds for every later poll.
        assert_eq!(poll(&mut device, "c", 114_000), (Poll::SlowDown, true));
        assert_eq!(device.interval, 15);
        assert_eq!(poll(&mut device, "c", 129_000), (Poll::Pending, true));
    }

    #[test]
    fn an_approved_code_is_redeemed_once_and_only_by_its_client() {
        let mut device = DeviceRecord {
            status: DeviceStatus::Approved,
            ..pending()
        };
        assert_eq!(poll(&mut device, "other", 100_000), (Poll::OtherClient, false));
        assert_eq!(poll(&mut device, "c", 100_000), (Poll::Approved, true));
        assert_eq!(poll(&mut device, "c", 200_000), (Poll::Redeemed, false));
        let mut late = DeviceRecord {
            status: DeviceStatus::Approved,
            ..pending()
        };
        assert_eq!(poll(&mut late, "c", 1_000_000), (Poll::Expired, false));
        let mut denied = DeviceRecord {
            status: DeviceStatus::Denied,
            ..pending()
        };
        assert_eq!(poll(&mut denied, "c", 100_000), (Poll::Denied, false));
    }
}

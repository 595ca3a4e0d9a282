//! A client's yes/no settings, each described once in [`SWITCHES`]: RFC 9449's
//! `dpop_bound_access_tokens`, RFC 9126's `require_pushed_authorization_requests`, and
//! `require_dpop_nonce` (RFC 9449 §8 for one client).
//!
//! Every surface derives its part from the table rather than naming a switch: the CLI's
//! `tessera app create` flags and `app show`, the admin API's and dynamic registration's
//! fields (and so the OpenAPI spec), Client ID Metadata Documents, the forms' checkboxes and
//! the detail pages. What a switch *does* lives where it is enforced (for PAR, the
//! authorization endpoint), reading the stored [`ClientPolicy`]. Adding one: "A new client
//! setting" in `src/README.md`.

use crate::config::RegistrationPolicy;
use crate::store::{ClientPolicy, TokenExchangePolicy};

/// One yes/no setting of a client; off unless a surface turns it on.
pub struct Switch {
    /// Its name on every surface: the RFC 7591 metadata field, the admin API's field, the
    /// form field, the key in `tessera app show --json`; the CLI flag is it with dashes.
    pub name: &'static str,
    /// The heading the pages and `tessera app show` show it under.
    pub title: &'static str,
    /// What turning it on means, for the spec, the CLI's help and the forms' checkbox.
    pub description: &'static str,
    /// How a client with it on is described.
    pub when_on: &'static str,
    /// Whoever registers a client may turn it on (dynamic registration, documents, the
    /// applications pages); otherwise only an operator may (CLI, admin API, console), and the
    /// self-service surfaces neither offer it nor change it.
    pub self_service: bool,
    /// Whether dynamic registration (RFC 7591/7592, Client ID Metadata Documents) may turn it
    /// on under the operator's registration policy; the pages of signed-in users may whenever
    /// it is self-service.
    pub open_to_registration: fn(&RegistrationPolicy) -> bool,
    get: fn(&ClientPolicy) -> bool,
    set: fn(&mut ClientPolicy, bool),
}

/// Every client switch, in the order every surface lists them.
pub(crate) const SWITCHES: &[Switch] = &[
    Switch {
        name: "dpop_bound_access_tokens",
        title: "DPoP",
        description: "Every token request must carry a DPoP proof, so every token is bound to the \
                      client's key and useless without it (RFC 9449 §5.2).",
        when_on: "required: every token is bound to the client's key",
        self_service: true,
        open_to_registration: |_| true,
        get: |policy| policy.dpop_bound_access_tokens,
        set: |policy, on| policy.dpop_bound_access_tokens = on,
    },
    Switch {
        name: "require_pushed_authorization_requests",
        title: "Pushed authorization requests",
        description: "Authorization requests must be pushed to /o/par/ first, so nothing in them \
                      can be changed in the browser (RFC 9126 §6).",
        when_on: "required: authorization requests are pushed to /o/par/ first",
        self_service: true,
        open_to_registration: |_| true,
        get: |policy| policy.require_pushed_authorization_requests,
        set: |policy, on| policy.require_pushed_authorization_requests = on,
    },
    Switch {
        name: "require_dpop_nonce",
        title: "DPoP nonce",
        description: "Every DPoP proof the client sends to the token endpoint must carry a fresh \
                      server nonce, so a proof made in advance is useless (RFC 9449 §8; on for \
                      every client when the server's dpop_nonce is).",
        when_on: "required: token requests' proofs carry a fresh server nonce",
        self_service: true,
        open_to_registration: |_| true,
        get: |policy| policy.require_dpop_nonce,
        set: |policy, on| policy.require_dpop_nonce = on,
    },
    Switch {
        name: "require_mfa",
        title: "Two-factor login",
        description: "Users sign in to this client with two factors: a passkey, or a password and \
                      an authenticator app's code (acr urn:tessera:acr:multi-factor). A user \
                      without either adds an app first; where second factors are off, the request \
                      is refused with unmet_authentication_requirements. Dynamic registration may \
                      set it only where the operator allows it (registration_allow_require_mfa).",
        when_on: "required: users sign in with two factors",
        self_service: true,
        // It makes users add a factor on the way: anonymous registrants may ask that of
        // people only if the operator says so.
        open_to_registration: |policy| policy.allow_require_mfa,
        get: |policy| policy.require_mfa,
        set: |policy, on| policy.require_mfa = on,
    },
];

/// How a client with a switch off is described.
pub(crate) const WHEN_OFF: &str = "optional";

impl Switch {
    /// Whether `policy` has this switch on.
    pub fn of(&self, policy: &ClientPolicy) -> bool {
        (self.get)(policy)
    }

    /// The CLI's flag: `--dpop-bound-access-tokens`.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// How a client with this switch `on` is described.
    pub fn shown(&self, on: bool) -> &'static str {
        if on {
            self.when_on
        } else {
            WHEN_OFF
        }
    }

    /// Whether a surface offers it: every switch to operators, self-service ones to everyone.
    pub fn offered(&self, to_operator: bool) -> bool {
        to_operator || self.self_service
    }
}

/// Gives `policy` the operator-only switches of `current`: a self-service surface neither
/// shows nor reads them, so what it submits must not turn them off.
pub(crate) fn keep_operator_switches(policy: &mut ClientPolicy, current: &ClientPolicy) {
    keep_operator_switches_of(SWITCHES, policy, current)
}

/// Gives `policy` the switches of `current` that dynamic registration may not change under
/// `registration`: an RFC 7592 update neither adds them nor drops one the operator set.
pub(crate) fn keep_closed_switches(
    policy: &mut ClientPolicy,
    current: &ClientPolicy,
    registration: &RegistrationPolicy,
) {
    for switch in SWITCHES.iter().filter(|s| !(s.open_to_registration)(registration)) {
        (switch.set)(policy, switch.of(current));
    }
}

fn keep_operator_switches_of(table: &[Switch], policy: &mut ClientPolicy, current: &ClientPolicy) {
    for switch in table.iter().filter(|s| !s.offered(false)) {
        (switch.set)(policy, switch.of(current));
    }
}

/// A value for each switch, in [`SWITCHES`] order: what a surface read, or what it shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchValues([bool; SWITCHES.len()]);

impl SwitchValues {
    /// The switches of a stored or proposed policy.
    pub fn of(policy: &ClientPolicy) -> SwitchValues {
        let mut values = SwitchValues::default();
        for (value, switch) in values.0.iter_mut().zip(SWITCHES) {
            *value = switch.of(policy);
        }
        values
    }

    /// Reads each switch with `value`; one it has nothing for (`None`) is off.
    pub fn read<E>(mut value: impl FnMut(&'static Switch) -> Result<Option<bool>, E>) -> Result<SwitchValues, E> {
        let mut values = SwitchValues::default();
        for (slot, switch) in values.0.iter_mut().zip(SWITCHES) {
            *slot = value(switch)?.unwrap_or(false);
        }
        Ok(values)
    }

    /// Each switch with its value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Switch, bool)> + '_ {
        SWITCHES.iter().zip(self.0.iter().copied())
    }

    /// The first switch these values turn on that dynamic registration may not under `policy`
    /// and that `current` (the policy of a client being updated) does not have on already: an
    /// update may repeat what the operator set, not add to it.
    pub fn closed_to_registration(
        &self,
        policy: &RegistrationPolicy,
        current: Option<&ClientPolicy>,
    ) -> Option<&'static Switch> {
        self.iter()
            .find(|(switch, on)| {
                *on && !(switch.open_to_registration)(policy) && !current.is_some_and(|c| switch.of(c))
            })
            .map(|(switch, _)| switch)
    }

    /// Each switch a surface offers ([`Switch::offered`]) with its value.
    pub fn offered(&self, to_operator: bool) -> impl Iterator<Item = (&'static Switch, bool)> + '_ {
        self.iter().filter(move |(switch, _)| switch.offered(to_operator))
    }

    /// Whether the switch named `name` is on.
    #[cfg(test)]
    pub fn get(&self, name: &str) -> bool {
        self.iter().any(|(switch, on)| on && switch.name == name)
    }

    /// The policy of a client with these switches and this token exchange policy.
    pub fn with(&self, token_exchange: TokenExchangePolicy) -> ClientPolicy {
        let mut policy = ClientPolicy {
            token_exchange,
            ..ClientPolicy::default()
        };
        for (switch, on) in self.iter() {
            (switch.set)(&mut policy, on);
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_switch_reads_and_writes_its_own_field_of_the_policy() {
        for (index, switch) in SWITCHES.iter().enumerate() {
            let values = SwitchValues::read(|s| Ok::<_, ()>(Some(s.name == switch.name))).unwrap();
            let policy = values.with(TokenExchangePolicy::default());
            assert!(switch.of(&policy), "{} is not set by its setter", switch.name);
            for other in SWITCHES.iter().filter(|s| s.name != switch.name) {
                assert!(!other.of(&policy), "setting {} turned on {}", switch.name, other.name);
            }
            assert_eq!(SwitchValues::of(&policy), values);
            let stored = serde_json::to_value(&policy).unwrap();
            assert_eq!(stored[switch.name], true, "the store record names it {}", switch.name);
            assert_eq!(values.iter().filter(|(_, on)| *on).count(), 1, "{index}");
        }
    }

    #[test]
    fn names_are_unique_snake_case_and_described() {
        let mut names: Vec<_> = SWITCHES.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SWITCHES.len());
        for switch in SWITCHES {
            assert!(
                switch.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                switch.name
            );
            assert!(!switch.title.is_empty() && !switch.description.is_empty() && !switch.when_on.is_empty());
        }
    }

    /// No switch is operator-only yet; this one stands for the first that will be.
    const OPERATOR_ONLY: Switch = Switch {
        name: "operator_only",
        title: "Operator only",
        description: "A switch only an operator may set.",
        when_on: "on",
        self_service: false,
        open_to_registration: |_| false,
        get: |policy| policy.require_dpop_nonce,
        set: |policy, on| policy.require_dpop_nonce = on,
    };

    #[test]
    fn a_self_service_surface_neither_offers_nor_clears_an_operator_only_switch() {
        assert!(!OPERATOR_ONLY.offered(false) && OPERATOR_ONLY.offered(true));
        assert!(SWITCHES.iter().all(|s| s.offered(true)));
        let current = ClientPolicy {
            require_dpop_nonce: true,
            ..ClientPolicy::default()
        };
        // What a self-service form or an RFC 7592 update submits: the switch is not in it.
        let mut submitted = ClientPolicy::default();
        keep_operator_switches_of(&[OPERATOR_ONLY], &mut submitted, &current);
        assert!(
            submitted.require_dpop_nonce,
            "an operator's switch survives a self-service edit"
        );
        let mut submitted = ClientPolicy::default();
        keep_operator_switches(&mut submitted, &current);
        assert!(
            !submitted.require_dpop_nonce,
            "a self-service switch is the submitter's to clear"
        );
    }

    #[test]
    fn require_mfa_is_open_to_dynamic_registration_only_where_the_operator_allows_it() {
        let values = SwitchValues::read(|s| Ok::<_, ()>(Some(s.name == "require_mfa"))).unwrap();
        let mut policy = RegistrationPolicy::default();
        assert_eq!(
            values.closed_to_registration(&policy, None).map(|s| s.name),
            Some("require_mfa")
        );
        // An update may repeat what the operator set, and cannot drop it.
        let set_by_operator = values.with(TokenExchangePolicy::default());
        assert!(values.closed_to_registration(&policy, Some(&set_by_operator)).is_none());
        let mut submitted = ClientPolicy::default();
        keep_closed_switches(&mut submitted, &set_by_operator, &policy);
        assert!(submitted.require_mfa);
        policy.allow_require_mfa = true;
        assert!(values.closed_to_registration(&policy, None).is_none());
        let others = SwitchValues::read(|s| Ok::<_, ()>(Some(s.name != "require_mfa"))).unwrap();
        assert!(others
            .closed_to_registration(&RegistrationPolicy::default(), None)
            .is_none());
    }

    #[test]
    fn a_switch_not_given_is_off_and_the_token_exchange_policy_is_kept() {
        let exchange = TokenExchangePolicy {
            audiences: vec!["https://api.example".into()],
            subject_audiences: vec![],
            require_actor: true,
        };
        let policy = SwitchValues::read(|_| Ok::<_, ()>(None))
            .unwrap()
            .with(exchange.clone());
        assert_eq!(
            policy,
            ClientPolicy {
                token_exchange: exchange,
                ..ClientPolicy::default()
            }
        );
    }
}

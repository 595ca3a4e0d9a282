//! The client switches ([`SWITCHES`]) as JSON fields of the admin API's and dynamic
//! registration's client objects, flattened into them (`#[oai(flatten)]`), so a switch added
//! to the table appears in the spec, the requests and the responses without an edit here.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::{Map, Value};

use crate::oauth::client::switches::{Switch, SwitchValues, SWITCHES};

/// The switches as fields. `OPERATOR`: every switch (the admin API) or only the self-service
/// ones (dynamic registration, which neither shows nor reads the others). `SHOWN`: a
/// response, where every field is present; otherwise a request, where each is optional and
/// off when left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwitchFields<const OPERATOR: bool, const SHOWN: bool>(pub SwitchValues);

/// The admin API's request and response fields.
pub type OperatorSwitches = SwitchFields<true, false>;
pub type OperatorSwitchesShown = SwitchFields<true, true>;
/// Dynamic registration's request and response fields.
pub type SelfServiceSwitches = SwitchFields<false, false>;
pub type SelfServiceSwitchesShown = SwitchFields<false, true>;

impl<const OPERATOR: bool, const SHOWN: bool> SwitchFields<OPERATOR, SHOWN> {
    fn switches() -> impl Iterator<Item = &'static Switch> {
        SWITCHES.iter().filter(|switch| switch.offered(OPERATOR))
    }
}

impl<const OPERATOR: bool, const SHOWN: bool> Type for SwitchFields<OPERATOR, SHOWN> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        match (OPERATOR, SHOWN) {
            (true, false) => "OperatorSwitches",
            (true, true) => "OperatorSwitchesShown",
            (false, false) => "SelfServiceSwitches",
            (false, true) => "SelfServiceSwitchesShown",
        }
        .into()
    }

    /// Inline, so flattening adds its properties and nothing to the spec's named schemas.
    fn schema_ref() -> MetaSchemaRef {
        let properties = Self::switches()
            .map(|switch| {
                let field = MetaSchema {
                    description: Some(switch.description),
                    ..MetaSchema::new("boolean")
                };
                (switch.name, MetaSchemaRef::Inline(Box::new(field)))
            })
            .collect();
        let required = match SHOWN {
            true => Self::switches().map(|switch| switch.name).collect(),
            false => Vec::new(),
        };
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            properties,
            required,
            ..MetaSchema::new("object")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<const OPERATOR: bool, const SHOWN: bool> ParseFromJSON for SwitchFields<OPERATOR, SHOWN> {
    /// Gets the whole object the switches are flattened into; other fields are not its own.
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let object = match value {
            Some(Value::Object(object)) => object,
            other => return Err(ParseError::expected_type(other.unwrap_or_default())),
        };
        let values = SwitchValues::read(|switch| match switch.offered(OPERATOR) {
            true => Option::<bool>::parse_from_json(object.get(switch.name).cloned()).map_err(ParseError::propagate),
            false => Ok(None),
        })?;
        Ok(SwitchFields(values))
    }
}

impl<const OPERATOR: bool, const SHOWN: bool> ToJSON for SwitchFields<OPERATOR, SHOWN> {
    fn to_json(&self) -> Option<Value> {
        let fields: Map<String, Value> = self
            .0
            .offered(OPERATOR)
            .map(|(switch, on)| (switch.name.to_string(), Value::Bool(on)))
            .collect();
        Some(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offered_switch_is_a_field_read_and_written_by_its_name() {
        for switch in SWITCHES.iter().filter(|s| s.offered(true)) {
            let body = serde_json::json!({ "name": "x", switch.name: true });
            let fields = OperatorSwitches::parse_from_json(Some(body)).unwrap();
            assert!(fields.0.get(switch.name), "{}", switch.name);
            let shown = SwitchFields::<true, true>(fields.0).to_json().unwrap();
            assert_eq!(shown[switch.name], true);
            assert_eq!(
                shown.as_object().unwrap().len(),
                SWITCHES.len(),
                "every switch is shown"
            );
        }
    }

    #[test]
    fn a_switch_that_is_not_a_boolean_is_refused_and_a_missing_or_null_one_is_off() {
        let name = SWITCHES[0].name;
        let wrong = serde_json::json!({ name: "yes" });
        assert!(SelfServiceSwitches::parse_from_json(Some(wrong)).is_err());
        let null = serde_json::json!({ name: null });
        assert_eq!(
            SelfServiceSwitches::parse_from_json(Some(null)).unwrap().0,
            SwitchValues::default()
        );
        assert_eq!(
            SelfServiceSwitches::parse_from_json(Some(serde_json::json!({})))
                .unwrap()
                .0,
            SwitchValues::default()
        );
    }

    #[test]
    fn the_schema_lists_the_switches_and_requires_them_only_in_responses() {
        let MetaSchemaRef::Inline(request) = OperatorSwitches::schema_ref() else {
            panic!("inline")
        };
        let MetaSchemaRef::Inline(response) = OperatorSwitchesShown::schema_ref() else {
            panic!("inline")
        };
        let names: Vec<_> = SWITCHES.iter().map(|s| s.name).collect();
        assert_eq!(request.properties.iter().map(|(n, _)| *n).collect::<Vec<_>>(), names);
        assert!(request.required.is_empty());
        assert_eq!(response.required, names);
    }
}

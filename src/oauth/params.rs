//! Request parameters as OAuth reads them: each name at most once (RFC 6749 §3.1), an empty
//! value counting as absent.

use super::Error;

/// Request parameters, where each name may appear at most once (RFC 6749 §3.1) and an empty
/// value counts as absent.
pub struct Params<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Params<'a> {
    pub fn new(pairs: &'a [(String, String)]) -> Params<'a> {
        Params { pairs }
    }

    /// The single value of `name`; an error if it was sent more than once.
    pub fn get(&self, name: &str) -> Result<Option<&'a str>, Error> {
        let mut values = self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(Error::invalid_request(format!(
                "parameter {name} was given more than once"
            )));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }
}

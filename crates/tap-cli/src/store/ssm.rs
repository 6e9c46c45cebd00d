//! Hyperparameters in SSM Parameter Store: SecureStrings, versioned by SSM, at
//! `<prefix>/<name>` when the name is made of characters SSM takes in one path segment
//! (`learning_rate`), else at `<prefix>/_enc/<hex of the name>` (`train/lr`, `eval/acc@1`:
//! SSM refuses `@ : + % ( ) [ ]`, and a `/` would make levels of a hierarchy that is capped at
//! 15). Every parameter's description is its name, so the console shows it either way.

use aws_sdk_ssm::Client;
use aws_sdk_ssm::types::{Parameter, ParameterType};

use tap_aws::sdk_error;

use super::{Param, ParamStore, Result, StoreError};

pub struct SsmParams {
    client: Client,
    prefix: String,
    kms_key_id: Option<String>,
}

fn missing_value(name: &str) -> StoreError {
    StoreError::message(format!("SSM answered with parameter {name} without its value"))
}

fn millis(t: Option<&aws_sdk_ssm::primitives::DateTime>) -> i64 {
    t.and_then(|d| d.to_millis().ok()).unwrap_or(0)
}

impl SsmParams {
    pub fn new(client: Client, prefix: &str, kms_key_id: Option<String>) -> SsmParams {
        SsmParams { client, prefix: prefix.trim_end_matches('/').to_owned(), kms_key_id }
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{}", self.prefix, ssm_key(name))
    }

    /// A parameter from SSM's answer; one without a name or a value is an error (SSM always
    /// sends both), not an empty hyperparameter.
    fn to_param(&self, p: &Parameter) -> Result<Param> {
        let full = p.name().ok_or_else(|| StoreError::message("SSM answered with a parameter without a name"))?;
        let rel = full.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(full);
        Ok(Param {
            name: name_of_key(rel)
                .ok_or_else(|| StoreError::message(format!("SSM parameter {full} is not one of tap's")))?,
            value: p.value().ok_or_else(|| missing_value(full))?.to_owned(),
            version: p.version() as u64,
            modified_ms: millis(p.last_modified_date()),
        })
    }
}

impl SsmParams {
    fn is_ours(&self, full: &str) -> bool {
        full.strip_prefix(&format!("{}/", self.prefix)).and_then(name_of_key).is_some()
    }
}

/// The segment under which names SSM cannot hold as they are live.
const ENCODED: &str = "_enc";

/// Where `name` lives under the prefix.
pub fn ssm_key(name: &str) -> String {
    if tap_core::runs::valid_id(name) {
        name.to_owned()
    } else {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{ENCODED}/{hex}")
    }
}

/// The name stored at `key` (None: not a key [`ssm_key`] makes).
pub fn name_of_key(key: &str) -> Option<String> {
    match key.strip_prefix(ENCODED).and_then(|k| k.strip_prefix('/')) {
        Some(hex) => {
            if hex.len() % 2 != 0 {
                return None;
            }
            let bytes: Option<Vec<u8>> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
            String::from_utf8(bytes?).ok().filter(|n| !tap_core::runs::valid_id(n))
        }
        None => Some(key.to_owned()).filter(|k| tap_core::runs::valid_id(k)),
    }
}

impl ParamStore for SsmParams {
    async fn list_params(&self) -> Result<Vec<Param>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .get_parameters_by_path()
                .path(&self.prefix)
                .recursive(true)
                .with_decryption(true)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("SSM GetParametersByPath", e))?;
            // Deeper parameters that are not tap's encoded names belong to someone else.
            for p in page.parameters().iter().filter(|p| p.name().is_some_and(|n| self.is_ours(n))) {
                out.push(self.to_param(p)?);
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn get_param(&self, name: &str) -> Result<Option<Param>> {
        match self.client.get_parameter().name(self.path(name)).with_decryption(true).send().await {
            Ok(r) => r.parameter().map(|p| self.to_param(p)).transpose(),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => Ok(None),
            Err(e) => Err(sdk_error("SSM GetParameter", e).into()),
        }
    }

    async fn set_param(&self, name: &str, value: &str) -> Result<Param> {
        let r = self
            .client
            .put_parameter()
            .name(self.path(name))
            .description(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .set_key_id(self.kms_key_id.clone())
            .overwrite(true)
            .send()
            .await
            .map_err(|e| sdk_error("SSM PutParameter", e))?;
        Ok(Param {
            name: name.to_owned(),
            value: value.to_owned(),
            version: r.version() as u64,
            modified_ms: crate::now_ms(),
        })
    }

    async fn unset_param(&self, name: &str) -> Result<bool> {
        match self.client.delete_parameter().name(self.path(name)).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => Ok(false),
            Err(e) => Err(sdk_error("SSM DeleteParameter", e).into()),
        }
    }

    async fn param_history(&self, name: &str) -> Result<Vec<Param>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = match self
                .client
                .get_parameter_history()
                .name(self.path(name))
                .with_decryption(true)
                .set_next_token(token.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => return Ok(Vec::new()),
                Err(e) => return Err(sdk_error("SSM GetParameterHistory", e).into()),
            };
            for h in page.parameters() {
                out.push(Param {
                    name: name.to_owned(),
                    value: h.value().ok_or_else(|| missing_value(name))?.to_owned(),
                    version: h.version() as u64,
                    modified_ms: millis(h.last_modified_date()),
                });
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        out.sort_by_key(|p| p.version);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ssm_cannot_hold_round_trip_through_their_key() {
        for name in ["learning_rate", "train/lr", "eval/acc@1", "opt:beta(1)", "_enc", "a".repeat(256).as_str()] {
            let key = ssm_key(name);
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c)), "{key}");
            assert!(key.len() <= 1011 - 64, "SSM's name limit leaves room for the prefix: {}", key.len());
            assert_eq!(name_of_key(&key).as_deref(), Some(name), "{key}");
        }
        assert_eq!(ssm_key("learning_rate"), "learning_rate", "plain names stay readable and as before");
        for foreign in ["a/b", "_enc/zz", "_enc/6", "_enc/6c72"] {
            assert_eq!(name_of_key(foreign), None, "{foreign}");
        }
    }
}

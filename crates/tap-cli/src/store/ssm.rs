//! Hyperparameters in SSM Parameter Store: `<prefix>/<name>` SecureStrings, versioned by SSM.

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
        format!("{}/{name}", self.prefix)
    }

    /// A parameter from SSM's answer; one without a name or a value is an error (SSM always
    /// sends both), not an empty hyperparameter.
    fn to_param(&self, p: &Parameter) -> Result<Param> {
        let full = p.name().ok_or_else(|| StoreError::message("SSM answered with a parameter without a name"))?;
        Ok(Param {
            name: full.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(full).to_owned(),
            value: p.value().ok_or_else(|| missing_value(full))?.to_owned(),
            version: p.version() as u64,
            modified_ms: millis(p.last_modified_date()),
        })
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
                .recursive(false)
                .with_decryption(true)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("SSM GetParametersByPath", e))?;
            for p in page.parameters() {
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

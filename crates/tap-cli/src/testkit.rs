//! Helpers for tests against moto (only with `--features aws-integration`): SDK settings for a
//! loopback endpoint and the stack's resources as the Terraform stack creates them.

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};

pub use tap_fleet::testkit::sdk_config;

/// The experiment table: `experiment_id` / `run_id`, on demand.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    let attr = |n: &str| {
        AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().expect("attr")
    };
    let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().expect("key");
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(attr("experiment_id"))
        .attribute_definitions(attr("run_id"))
        .key_schema(key("experiment_id", KeyType::Hash))
        .key_schema(key("run_id", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("CreateTable");
}

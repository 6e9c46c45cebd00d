//! For tests against moto (`--features aws-integration`): SDK settings for a loopback
//! endpoint and the experiment table as the stack creates it.

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};

/// SDK settings for moto on a loopback endpoint (us-east-1, static test credentials).
pub fn sdk_config(endpoint: &str) -> aws_types::SdkConfig {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
    aws_types::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "static")))
        .build()
}

/// The experiment table: `experiment_id` / `run_id`, on demand (infra/tap-stack.tf).
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

//! Helpers for tests against moto (only with `--features aws-integration`): SDK settings for a
//! loopback endpoint and the stack's resources as the Terraform stack creates them.

pub use tap_fleet::testkit::sdk_config;

pub use tap_store::testkit::create_table;

//! Shared pieces of tap: the metric contract with the stack and the configuration formats.

pub mod agent_config;
pub mod args;
pub mod boot;
pub mod command_env;
pub mod commit;
pub mod contract;
pub mod diff;
pub mod downsample;
pub mod fleet;
pub mod fsutil;
pub mod goodput;
pub mod group;
pub mod jobs;
pub mod lease;
pub mod manifest;
pub mod names;
pub mod notice;
pub mod pools;
pub mod prices;
pub mod query;
pub mod runs;
pub mod shards;
pub mod simulate;
pub mod stack_config;
pub mod text;
pub mod time;

#[cfg(test)]
mod stack_source;

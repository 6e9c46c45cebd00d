//! Fleet operations of `tap`: see the fleet (`tap fleet status`), size it (`tap fleet scale`,
//! `tap fleet idle`, and tap-agent's opt-in scale-to-zero) and launch multi-node jobs on it (`tap launch`) through AWS's own
//! execution engine (SSM Run Command) and PyTorch's (torchrun) — no scheduler of our own.
//! `aws-sdk-ec2` lives in this crate only (and, for tests, in tap-test-support's fleet fixture).

pub mod aws;
pub mod idle;
pub mod launch;
pub mod render;

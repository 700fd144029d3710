//! The pure core: every decision Knock makes, with time passed in and no IO.

pub mod blocklist;
pub mod config;
pub mod deployment;
pub mod form;
pub mod lifecycle;
pub mod moderation;
pub mod mxid;
pub mod outcome;
pub mod paged;
pub mod policy;
pub mod rate_limit;
pub mod signature;
pub mod watchdog;

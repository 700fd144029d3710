//! The pure core: every decision Knock makes, with time passed in and no IO.

pub mod blocklist;
pub mod config;
pub mod form;
pub mod invites;
pub mod moderation;
pub mod mxid;
pub mod rate_limit;
pub mod signature;
pub mod watchdog;

//! End-to-end tests: the real worker in `wrangler dev --local` against a real Synapse, both on
//! 127.0.0.1 and both started here. Run them with `scripts/test`, which installs and builds
//! everything first.

mod beeper_stub;
mod blocklist;
mod fault_proxy;
mod faults;
mod form_flow;
mod hostile;
mod intake;
mod lifecycle;
mod login;
mod management;
mod policy;
mod rate_limits;
mod rooms;
mod sandbox;
mod support;
mod turnstile_stub;
mod upgrade;
mod watchdogs;
mod web_ui;

//! Knock: out-of-band invites to private Matrix rooms, as a Cloudflare Worker.
//!
//! - [`domain`]: the pure core. It decides everything, takes `now` as an argument, does no IO and
//!   never imports `worker`; plain `cargo test` covers it.
//! - [`matrix`]: client-server API requests and responses as data, behind a [`matrix::Transport`].
//! - [`room`]: what a room's Durable Object does, over a host and a SQL seam, so the same code
//!   runs in the worker and in the native simulation.
//! - [`manage`]: what a management room's Durable Object does on each poll, over a host seam.
//! - `edge` (wasm32 only): the thin Cloudflare layer: routes, Durable Objects, cron, KV.

pub mod domain;
pub mod manage;
pub mod matrix;
pub mod room;
pub mod turnstile;
pub mod web;

#[cfg(target_arch = "wasm32")]
mod edge;

//! The moderator page at `/admin/`: what it decides and renders, with no IO.
//!
//! - [`session`]: session ids, the cookie, CSRF tokens, idle expiry and the security headers.
//! - [`page`]: every view as HTML, rendered from the admin API's own JSON answers (the worker
//!   calls the API's handlers in process and hands their answers here). Every value that comes
//!   from outside is escaped with the one HTML escape ([`crate::domain::moderation::notices::escape`]).
//!
//! The page's stylesheet and script are embedded ([`CSS`], [`JS`]): no build step, no second
//! host, and the worker's sign-in and headers apply to them like to every view.

pub mod page;
pub mod session;

/// The page's stylesheet (light and dark, from 360 px up).
pub const CSS: &str = include_str!("assets/admin.css");
/// The page's script: actions call the admin API with the session's CSRF token.
pub const JS: &str = include_str!("assets/admin.js");

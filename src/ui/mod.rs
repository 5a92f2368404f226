//! The web view (`gantry ui`): the fleet, each Application, the sources, live. Pure parts
//! first: `view` (what is shown, as data) and `pages` (HTML); `server` is the HTTP edge
//! (routes, security headers, caches filled by the viewer's own watches, server-sent
//! events).

pub mod pages;
pub mod server;
pub mod view;

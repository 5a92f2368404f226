//! The web view (`gantry ui`): the fleet, each Application, the sources, live, and the
//! actions a viewer may take. Pure parts first: `view` (what is shown, as data) and `pages`
//! (HTML); `actions` (sync, promote, abort, suspend, resume as the viewer, and the CSRF
//! token); `server` is the HTTP edge (routes, security headers, caches filled by the
//! viewer's own watches, server-sent events).

pub mod actions;
pub mod pages;
pub mod server;
pub mod view;

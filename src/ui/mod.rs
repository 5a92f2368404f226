//! The web view (`gantry ui`, and the controller's `--ui-addr`): the fleet, each
//! Application, the other kinds, live, and the actions a viewer may take — all with the
//! viewer's own rights. Pure parts first: `view` (what is shown, as data) and `pages`
//! (HTML); `objects` reads an Application's live objects; `actions` (sync, promote, abort,
//! suspend, resume as the viewer, and the CSRF token); `viewer` (one viewer's client and
//! caches) and `sessions` (a viewer per bearer token); `server` is the HTTP edge.

pub mod actions;
pub mod diff;
pub mod metrics;
pub mod objects;
pub mod pages;
pub mod server;
pub mod sessions;
pub mod view;
pub mod viewer;

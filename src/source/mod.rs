//! Sources: Git repositories (fetch, checkout, artifacts).

pub mod artifact;
pub mod git;
pub mod known_hosts;
pub mod url_policy;

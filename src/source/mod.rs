//! Sources: Git repositories (fetch, checkout, artifacts).

pub mod artifact;
pub mod git;
pub mod url_policy;

//! Sources: Git repositories (fetch, checkout, artifacts, commit and push) and container
//! registries (tags, digests, tag policies).

pub mod artifact;
pub mod chart_version;
pub mod cosign;
pub mod deadline_proxy;
pub mod fetch_gate;
pub mod git;
pub mod git_fetch;
pub mod git_http;
pub mod helm_repo;
pub mod known_hosts;
pub mod oci_chart;
pub mod registry;
pub mod registry_auth;
pub mod store;
pub mod tag_policy;
#[cfg(test)]
pub mod test_repo;
pub mod tree;
pub mod url_policy;
pub mod verify;

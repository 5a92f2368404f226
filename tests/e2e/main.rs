//! End-to-end tests against the local control plane (tests/cluster), a Git server and an
//! OCI registry, all on 127.0.0.1. `make test` starts what is missing; without a control
//! plane these tests fail and say how to start one.

mod support;

mod boundaries;
mod chart;
mod chart_automation;
mod cli;
mod clusters;
mod controller;
mod crds;
mod drift;
mod faults;
mod git_http;
mod git_server;
mod git_source;
mod health_rules;
mod helm_repos;
mod hooks;
mod image_automation;
mod image_policy;
mod image_signatures;
mod in_cluster;
mod isolation;
mod leader;
mod notifications;
mod oci_charts;
mod ownership;
mod plan;
mod policies;
mod receivers;
mod registry;
mod render_parity;
mod render_tools;
mod restarts;
mod rollouts;
mod signed_commits;
mod sops;
mod sync;
mod tenancy;
mod ui;
mod workloads;

//! Gantry: a GitOps continuous-delivery controller for Kubernetes.
#![forbid(unsafe_code)]

pub mod api;
pub mod apply;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod drift;
pub mod error;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod render;
pub mod rollout;
pub mod server;
pub mod source;
pub mod text;
pub mod trigger;
pub mod ui;
pub mod writeback;

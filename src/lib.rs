//! Gantry: a GitOps continuous-delivery controller for Kubernetes.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod error;
pub mod render;
pub mod source;

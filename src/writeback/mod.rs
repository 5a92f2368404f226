//! Image and chart-version write-back: edit the image references and chart versions in Git (pure, `edit`), commit and push
//! without force, retrying on a non-fast-forward (`repo`); `git revert` of a range for
//! rollbacks (`revert`).

pub mod chart_edit;
pub mod edit;
pub mod repo;
pub mod revert;
pub mod update;

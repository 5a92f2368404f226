//! Image write-back: edit the image references in Git (pure, `edit`), commit and push
//! without force, retrying on a non-fast-forward (`repo`); `git revert` of a range for
//! rollbacks (`revert`).

pub mod edit;
pub mod repo;
pub mod revert;

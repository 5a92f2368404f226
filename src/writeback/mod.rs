//! Image write-back: edit the image references in Git (pure, `edit`), commit and push
//! without force, retrying on a non-fast-forward (`repo`).

pub mod edit;
pub mod repo;

//! A Git repository with one commit of the given files, for unit tests.

use std::path::Path;

/// Initialises a repository in `dir` and commits `files` (path, content) to `HEAD`.
pub fn commit_files(dir: &Path, files: &[(&str, &str)]) -> (git2::Repository, git2::Oid) {
    let repo = git2::Repository::init(dir).unwrap();
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    let tree_id = index.write_tree().unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let oid = {
        let tree = repo.find_tree(tree_id).unwrap();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .unwrap()
    };
    (repo, oid)
}

/// Commits the work tree of `repo` on top of `parent`.
pub fn commit_on(repo: &git2::Repository, parent: git2::Oid) -> git2::Oid {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let parent = repo.find_commit(parent).unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "next", &tree, &[&parent])
        .unwrap()
}

//! Names the build for `tessera --version`: the git commit it was built from (with `-dirty`
//! when the work tree had changes), when git and a repository are there; the profile always.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=10", "HEAD"]);
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    let build = match commit {
        Some(commit) => format!("commit {commit}{}, {profile} build", if dirty { "-dirty" } else { "" }),
        None => format!("{profile} build"),
    };
    println!("cargo:rustc-env=TESSERA_BUILD={build}");
    // A new commit, a checkout or a staged change names another build.
    for path in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let reference = format!(".git/{head}");
        if std::path::Path::new(&reference).exists() {
            println!("cargo:rerun-if-changed={reference}");
        }
    }
    // Edits make a build dirty (and stop cargo's default of rerunning on every package file).
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=build.rs");
}

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bitswarm_metainfo::unsafe_component;

/// A file found under the path given to `torrent create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedFile {
    /// Where to read it.
    pub disk_path: PathBuf,
    /// Path components relative to the walked folder (for a single file: its name).
    pub components: Vec<String>,
    pub length: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: file name is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("{0}: {1}")]
    Unsafe(PathBuf, &'static str),
    #[error("{0}: symbolic link loop")]
    Loop(PathBuf),
    #[error("{0}: not a regular file or folder")]
    Special(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalkError + '_ {
    move |source| WalkError::Io { path: path.to_owned(), source }
}

/// Collects the files under `root`, which may be one file or a folder.
///
/// Returns whether `root` is a folder, and the files sorted by their path components (byte
/// order, component by component, so `a/b` comes before `a.txt`). Hidden files are included;
/// symbolic links are followed (a link to a folder that contains it is a loop and an error; a
/// broken link is an error); empty files are kept; empty folders cannot be represented in a
/// torrent and leave no trace.
pub fn walk(root: &Path) -> Result<(bool, Vec<WalkedFile>), WalkError> {
    let meta = fs::metadata(root).map_err(io(root))?;
    if meta.is_file() {
        let name = file_name(root)?;
        return Ok((
            false,
            vec![WalkedFile { disk_path: root.to_owned(), components: vec![name], length: meta.len() }],
        ));
    }
    if !meta.is_dir() {
        return Err(WalkError::Special(root.to_owned()));
    }
    let mut out = Vec::new();
    let mut stack = HashSet::new();
    stack.insert((meta.dev(), meta.ino()));
    walk_dir(root, &mut Vec::new(), &mut stack, &mut out)?;
    out.sort_unstable_by(|a, b| a.components.cmp(&b.components));
    Ok((true, out))
}

fn file_name(p: &Path) -> Result<String, WalkError> {
    // `.` or `dir/..` have no usable name: resolve them first.
    let canonical;
    let p = if p.file_name().is_none() {
        canonical = fs::canonicalize(p).map_err(io(p))?;
        &canonical
    } else {
        p
    };
    let name = p.file_name().ok_or_else(|| WalkError::Unsafe(p.to_owned(), "has no file name"))?;
    let name = name.to_str().ok_or_else(|| WalkError::NotUtf8(p.to_owned()))?;
    if let Some(problem) = unsafe_component(name) {
        return Err(WalkError::Unsafe(p.to_owned(), problem));
    }
    Ok(name.to_owned())
}

fn walk_dir(
    dir: &Path,
    prefix: &mut Vec<String>,
    stack: &mut HashSet<(u64, u64)>,
    out: &mut Vec<WalkedFile>,
) -> Result<(), WalkError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|_| WalkError::NotUtf8(path.clone()))?;
        let ft = entry.file_type().map_err(io(&path))?;
        // Follow links: the metadata of what they point to.
        let meta = if ft.is_symlink() { fs::metadata(&path) } else { entry.metadata() }.map_err(io(&path))?;
        if meta.is_file() {
            let mut components = prefix.clone();
            components.push(name);
            out.push(WalkedFile { disk_path: path, components, length: meta.len() });
        } else if meta.is_dir() {
            let id = (meta.dev(), meta.ino());
            if !stack.insert(id) {
                return Err(WalkError::Loop(path));
            }
            prefix.push(name);
            walk_dir(&path, prefix, stack, out)?;
            prefix.pop();
            stack.remove(&id);
        } else {
            return Err(WalkError::Special(path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_with_hidden_empty_and_links() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        fs::create_dir_all(r.join("a/deep")).unwrap();
        fs::create_dir_all(r.join("empty_dir")).unwrap();
        fs::write(r.join("a.txt"), b"12345").unwrap();
        fs::write(r.join("a/deep/x"), b"1").unwrap();
        fs::write(r.join(".hidden"), b"").unwrap();
        std::os::unix::fs::symlink(r.join("a.txt"), r.join("link")).unwrap();
        let (is_dir, files) = walk(&r).unwrap();
        assert!(is_dir);
        let names: Vec<String> = files.iter().map(|f| f.components.join("/")).collect();
        assert_eq!(names, vec![".hidden", "a/deep/x", "a.txt", "link"]);
        assert_eq!(files[3].length, 5);

        std::os::unix::fs::symlink(&r, r.join("a/loop")).unwrap();
        assert!(matches!(walk(&r), Err(WalkError::Loop(_))));
    }

    #[test]
    fn single_file_and_errors() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f.bin");
        fs::write(&f, b"abc").unwrap();
        let (is_dir, files) = walk(&f).unwrap();
        assert!(!is_dir);
        assert_eq!(files[0].components, vec!["f.bin".to_string()]);
        let e = walk(&t.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("No such file"), "{e}");
    }
}

//! Putting several output files in place together: all of them, or none.
//!
//! A conversion writes three files (weights, `config.json`, `preprocessor_config.json`) and
//! `forward` up to three `.npy` files. Each is written completely to a temp file beside its
//! destination first ([`AtomicFile`]); [`OutputSet::commit`] then puts them in place as one
//! transaction:
//!
//! 1. every destination is checked: it must be absent or a regular file (a directory, FIFO, … in
//!    its place is refused, [`ErrorKind::NotRegularFile`]; a symlink to a regular file was
//!    resolved when the file was created, [`resolve_destination`], so the link stays and its
//!    target is replaced), and no two files may share one;
//! 2. every destination that exists is kept aside under a backup name of this process,
//!    `.<name>.old-<pid>-<n>`: a hard link (the destination stays in place, so readers keep
//!    seeing the old file), or, on filesystems without hard links, a rename;
//! 3. the temp files are renamed over their destinations, one by one;
//! 4. only after the last rename succeeded are the backups removed.
//!
//! A failure in step 2 or 3 rolls back: every destination already replaced gets its old file
//! back (renamed from its backup) or is removed when there was none, and the unused temp files
//! are removed — the folder is left exactly as it was. A process killed during step 2–4 can
//! leave a backup file behind; it is never removed automatically, since it may hold the only
//! copy of the previous file.

use std::path::{Path, PathBuf};

use super::AtomicFile;
use crate::error::{Error, ErrorKind, Result};

/// Files written to temp files, to be put in place together by [`OutputSet::commit`].
#[derive(Default)]
pub(crate) struct OutputSet {
    files: Vec<AtomicFile>,
    /// Sync every file to disk before the renames ([`ConvertOptions::fsync`]).
    ///
    /// [`ConvertOptions::fsync`]: crate::ConvertOptions::fsync
    fsync: bool,
}

/// One destination during a commit.
struct Step {
    dest: PathBuf,
    /// Where the previous file was kept, and whether it was moved (not linked) there.
    backup: Option<(PathBuf, bool)>,
    /// Whether the new file was renamed into place.
    renamed: bool,
}

#[cfg(test)]
thread_local! {
    /// Test-only fault injection: the file-system step (backup or rename, counted from 0 over a
    /// whole commit) that fails.
    pub(crate) static FAIL_STEP: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    /// Test-only: behave as on a filesystem without hard links.
    pub(crate) static NO_HARD_LINKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `std::fs::hard_link`, failing as on a filesystem without hard links when a test asks.
fn hard_link(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if NO_HARD_LINKS.with(|f| f.get()) {
        return Err(std::io::Error::from(std::io::ErrorKind::Unsupported));
    }
    std::fs::hard_link(from, to)
}

/// Fails the `step`th file-system step when a test asks for it.
fn injected(step: usize) -> std::io::Result<()> {
    #[cfg(test)]
    if FAIL_STEP.with(|f| f.get()) == Some(step) {
        return Err(std::io::Error::other("injected failure"));
    }
    let _ = step;
    Ok(())
}

impl OutputSet {
    /// An empty set.
    pub(crate) fn new() -> OutputSet {
        OutputSet::default()
    }

    /// An empty set whose files are synced to disk before they are renamed when `fsync`.
    pub(crate) fn with_fsync(fsync: bool) -> OutputSet {
        OutputSet {
            fsync,
            ..OutputSet::default()
        }
    }

    /// Adds a written file (not yet committed).
    pub(crate) fn push(&mut self, file: AtomicFile) {
        self.files.push(file);
    }

    /// Puts every file in place, or none (see the [module docs](self)).
    ///
    /// # Errors
    /// [`ErrorKind::NotRegularFile`] for a destination that is a directory or special file,
    /// [`ErrorKind::Duplicate`] for two files with one destination, [`ErrorKind::Io`] for a
    /// failed write, link or rename; the destinations are then as they were.
    pub(crate) fn commit(self) -> Result<()> {
        let mut files = self.files;
        for f in &mut files {
            f.sync()?;
            if self.fsync {
                f.sync_to_disk()?;
            }
        }
        for (i, f) in files.iter().enumerate() {
            check_destination(&f.dest)?;
            let same = files
                .get(..i)
                .unwrap_or(&[])
                .iter()
                .any(|g| super::same_output(&g.dest, &f.dest));
            if same {
                return Err(ErrorKind::Duplicate {
                    what: "output file",
                    name: f.dest.display().to_string(),
                }
                .into());
            }
        }
        let mut steps: Vec<Step> = Vec::with_capacity(files.len());
        let mut step = 0usize;
        for f in &files {
            let backup = match std::fs::symlink_metadata(&f.dest) {
                Ok(_) => {
                    step += 1;
                    match keep_aside(&f.dest, step - 1) {
                        Ok(b) => Some(b),
                        Err(e) => {
                            roll_back(&steps);
                            return Err(e);
                        }
                    }
                }
                Err(_) => None,
            };
            steps.push(Step {
                dest: f.dest.clone(),
                backup,
                renamed: false,
            });
        }
        for (i, f) in files.iter().enumerate() {
            let r = injected(step).and_then(|()| std::fs::rename(&f.tmp, &f.dest));
            step += 1;
            match (r, steps.get_mut(i)) {
                (Ok(()), Some(s)) => s.renamed = true,
                (Ok(()), None) => {}
                (Err(e), _) => {
                    roll_back(&steps);
                    return Err(Error::from(ErrorKind::io("rename", e)).with_path(&f.dest));
                }
            }
        }
        for s in &steps {
            if let Some((backup, _)) = &s.backup {
                let _ = std::fs::remove_file(backup);
            }
        }
        Ok(())
    }
}

/// Where a file meant for `dest` goes: `dest` itself when it is absent or a regular file; the
/// file a symlink finally names when it is one to a regular file (written through: the target
/// is replaced, the link stays — renaming over the link would delete a link this process did
/// not create, e.g. `/dev/stdout`). Called before anything is written.
///
/// # Errors
/// [`ErrorKind::NotRegularFile`] when `dest`, or what its symlink names, is a directory or a
/// special file (`--output /dev/stdout` with stdout a pipe or terminal), or a symlink names
/// nothing; [`ErrorKind::Io`] (`stat`, `resolve`).
pub(crate) fn resolve_destination(dest: &Path) -> Result<PathBuf> {
    let err = |op, e| Error::from(ErrorKind::io(op, e)).with_path(dest);
    let link = match std::fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dest.to_path_buf()),
        Err(e) => return Err(err("stat", e)),
    };
    if !link.file_type().is_symlink() {
        crate::fsio::refuse_special(&link).map_err(|e| e.with_path(dest))?;
        return Ok(dest.to_path_buf());
    }
    match std::fs::metadata(dest) {
        Ok(m) => crate::fsio::refuse_special(&m).map_err(|e| e.with_path(dest))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::from(ErrorKind::NotRegularFile {
                kind: "symlink to nothing",
            })
            .with_path(dest))
        }
        Err(e) => return Err(err("stat", e)),
    }
    std::fs::canonicalize(dest).map_err(|e| err("resolve", e))
}

/// Refuses a destination that exists and is neither a regular file nor a symlink (renaming over
/// it would fail, or replace a directory's entry by a file).
fn check_destination(dest: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_symlink() => Ok(()),
        Ok(m) => crate::fsio::refuse_special(&m).map_err(|e| e.with_path(dest)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::from(ErrorKind::io("stat", e)).with_path(dest)),
    }
}

/// Keeps the existing `dest` under a fresh backup name: hard-linked, or renamed where the
/// filesystem has no hard links. Returns the backup and whether `dest` was moved.
fn keep_aside(dest: &Path, step: usize) -> Result<(PathBuf, bool)> {
    let err = |op, e| Error::from(ErrorKind::io(op, e)).with_path(dest);
    injected(step).map_err(|e| err("link", e))?;
    for backup in super::sibling_names(dest, "old") {
        match hard_link(dest, &backup) {
            Ok(()) => return Ok((backup, false)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                // No hard links here (FAT, some network filesystems): move the file aside. The
                // name has this process's id, so only a leftover of this process can hold it.
                if std::fs::symlink_metadata(&backup).is_ok() {
                    continue;
                }
                return std::fs::rename(dest, &backup)
                    .map(|()| (backup, true))
                    .map_err(|e| err("rename", e));
            }
        }
    }
    Err(err(
        "link",
        std::io::Error::other("no free backup file name"),
    ))
}

/// Undoes the steps taken so far (best effort: a backup that cannot be restored stays on disk
/// under its backup name).
fn roll_back(steps: &[Step]) {
    for s in steps.iter().rev() {
        match (&s.backup, s.renamed) {
            (Some((backup, moved)), renamed) if renamed || *moved => {
                let _ = std::fs::rename(backup, &s.dest);
            }
            (Some((backup, _)), _) => {
                let _ = std::fs::remove_file(backup);
            }
            (None, true) => {
                let _ = std::fs::remove_file(&s.dest);
            }
            (None, false) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Every entry of `dir`: name → bytes (`None` for a directory).
    fn snapshot(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                let bytes = if e.file_type().unwrap().is_dir() {
                    None
                } else {
                    Some(std::fs::read(e.path()).unwrap())
                };
                (name, bytes)
            })
            .collect()
    }

    fn staged(dir: &Path, files: &[(&str, &[u8])]) -> OutputSet {
        let mut set = OutputSet::new();
        for (name, bytes) in files {
            let mut f = AtomicFile::create(&dir.join(name)).unwrap();
            f.write_all(bytes).unwrap();
            set.push(f);
        }
        set
    }

    const NEW: &[(&str, &[u8])] = &[("a", b"new a"), ("b", b"new b"), ("c", b"new c")];

    fn every_failed_step_leaves_the_folder_as_it_was(no_links: bool) {
        NO_HARD_LINKS.with(|f| f.set(no_links));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"old a").unwrap();
        std::fs::write(dir.path().join("c"), b"old c").unwrap();
        std::fs::write(dir.path().join("keep"), b"keep").unwrap();
        let before = snapshot(dir.path());
        // Two backups (a, c) and three renames.
        for step in 0..5 {
            let set = staged(dir.path(), NEW);
            FAIL_STEP.with(|f| f.set(Some(step)));
            let e = set.commit().unwrap_err();
            FAIL_STEP.with(|f| f.set(None));
            assert!(e.to_string().contains("injected failure"), "{e}");
            assert_eq!(snapshot(dir.path()), before, "failure at step {step}");
        }
        staged(dir.path(), NEW).commit().unwrap();
        let after = snapshot(dir.path());
        let want: BTreeMap<String, Option<Vec<u8>>> = NEW
            .iter()
            .map(|(n, b)| (n.to_string(), Some(b.to_vec())))
            .chain([("keep".to_string(), Some(b"keep".to_vec()))])
            .collect();
        assert_eq!(after, want, "no backup or temp file is left");
        NO_HARD_LINKS.with(|f| f.set(false));
    }

    #[test]
    fn a_failure_at_any_backup_or_rename_restores_every_destination() {
        every_failed_step_leaves_the_folder_as_it_was(false);
    }

    #[test]
    fn without_hard_links_the_old_files_are_moved_aside_and_restored() {
        every_failed_step_leaves_the_folder_as_it_was(true);
    }

    #[test]
    fn a_directory_in_place_of_an_output_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"old a").unwrap();
        std::fs::create_dir(dir.path().join("c")).unwrap();
        let before = snapshot(dir.path());
        // Refused before a temp file is written…
        let e = AtomicFile::create(&dir.path().join("c")).err().unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::NotRegularFile { kind: "directory" }),
            "{e}"
        );
        assert_eq!(snapshot(dir.path()), before);
        // …and again at the commit, for a directory that appeared after the files were written.
        std::fs::remove_dir(dir.path().join("c")).unwrap();
        let set = staged(dir.path(), NEW);
        std::fs::create_dir(dir.path().join("c")).unwrap();
        let e = set.commit().unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::NotRegularFile { kind: "directory" }),
            "{e}"
        );
        assert_eq!(e.path(), Some(dir.path().join("c").as_path()));
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn two_files_for_one_destination_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = staged(dir.path(), &[("a", b"1"), ("./a", b"2")])
            .commit()
            .unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Duplicate {
                    what: "output file",
                    ..
                }
            ),
            "{e}"
        );
        assert!(snapshot(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_conversion_commit_leaves_outdir_as_it_was() {
        let input =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/convert/timm_vit/source.pth");
        let opts = crate::ConvertOptions {
            from: Some("timm".parse().unwrap()),
            overrides: crate::model::ConfigOverrides {
                num_heads: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        for to in [
            crate::convert::OutputFormat::Safetensors,
            crate::convert::OutputFormat::Npz,
            crate::convert::OutputFormat::Flax,
        ] {
            let opts = crate::ConvertOptions { to, ..opts.clone() };
            let dir = tempfile::tempdir().unwrap();
            let [weights, cfg, _] = to.output_files(dir.path());
            std::fs::write(&weights, b"previous weights").unwrap();
            std::fs::write(&cfg, b"{\"previous\": true}").unwrap();
            let before = snapshot(dir.path());
            // Two backups (weights, config.json) and three renames.
            for step in 0..5 {
                FAIL_STEP.with(|f| f.set(Some(step)));
                let e = crate::convert(&input, dir.path(), &opts).unwrap_err();
                FAIL_STEP.with(|f| f.set(None));
                assert!(matches!(e.kind(), ErrorKind::Io { .. }), "{e}");
                assert_eq!(
                    snapshot(dir.path()),
                    before,
                    "{to:?}, failure at step {step}"
                );
            }
            crate::convert(&input, dir.path(), &opts).unwrap();
            assert_eq!(snapshot(dir.path()).len(), 3, "{to:?}");

            // Into a new OUTDIR: the folders it created are removed again.
            let out = dir.path().join("new").join("nested");
            for step in 0..3 {
                FAIL_STEP.with(|f| f.set(Some(step)));
                let e = crate::convert(&input, &out, &opts).unwrap_err();
                FAIL_STEP.with(|f| f.set(None));
                assert!(e.to_string().contains("injected failure"), "{e}");
                assert!(!dir.path().join("new").exists(), "{to:?}, step {step}");
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_destination_resolves_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let real = d.join("real");
        std::fs::write(&real, b"old").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        let chain = d.join("chain");
        std::os::unix::fs::symlink("link", &chain).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(resolve_destination(&link).unwrap(), real);
        assert_eq!(resolve_destination(&chain).unwrap(), real);
        assert_eq!(resolve_destination(&d.join("new")).unwrap(), d.join("new"));
        let kind = |p: &Path| match resolve_destination(p) {
            Err(e) => match e.kind() {
                ErrorKind::NotRegularFile { kind } => *kind,
                _ => panic!("{e}"),
            },
            Ok(r) => panic!("{}", r.display()),
        };
        std::os::unix::fs::symlink("nothing", d.join("dangling")).unwrap();
        assert_eq!(kind(&d.join("dangling")), "symlink to nothing");
        std::os::unix::fs::symlink("/dev/null", d.join("null")).unwrap();
        assert_eq!(kind(&d.join("null")), "character device");
        assert_eq!(kind(d), "directory");
        staged(d, &[("chain", b"new")]).commit().unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert!(std::fs::symlink_metadata(&chain)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

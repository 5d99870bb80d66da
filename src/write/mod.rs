//! Writers: canonical (and timm-layout) safetensors, JAX-layout npz, Flax msgpack, and JSON
//! configs. Every
//! file is written to a temporary file in the destination folder and renamed into place, so a
//! failure never leaves a partial file and never touches an existing one. Several files that
//! belong together (a conversion's three, `forward`'s `.npy` outputs) are put in place as one
//! transaction ([`write_files`]; `OutputSet` inside the crate): all of them, or none, with the
//! replaced files kept until the last rename succeeded and restored on any failure.
//!
//! Temp files are `.<name>.tmp-<pid>-<n>`, created exclusively and removed on any error. A
//! killed process cannot remove its own, and no later run removes it either: nothing in a name,
//! a process id or a file's metadata proves that a file was written by this tool (a file of the
//! user's, or an input, can be named so), and the writers never delete a file they did not
//! create in the same run. Such a leftover is a hidden partial file, never under the final name;
//! remove it by hand.
//!
//! Writers stream: one tensor is read, written and released (its mapped input pages dropped,
//! see [`TensorSource::release_pages`]) before the next, so peak memory does not grow with the
//! model. A tensor that is a byte range of the (memory-mapped) input is read from the input file,
//! never through the mapping: big ones are copied file to file in the kernel, small ones read
//! with `pread` into the write buffer (the first touch of a mapped byte can map a whole 2 MiB
//! page-cache folio). Computed tensors are written from memory.
//!
//! Durability: files are renamed into place after a complete write, so a reader sees either the
//! old file or the whole new one, but they are not `fsync`ed (like `cp`, `torch.save` and
//! safetensors' `save_file`): after a power loss a just-converted file may be missing or empty,
//! never a partial file under its final name with no error reported earlier. Set
//! [`ConvertOptions::fsync`](crate::ConvertOptions::fsync) (the CLI: `VIT_CONVERT_FSYNC=1`) to
//! sync every file before its rename.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::source::TensorSource;
use crate::tensor::{cast_float_checked, checked_byte_len, DType};

pub(crate) mod cast;
pub(crate) mod flax;
pub(crate) mod npz;
mod staged;

pub(crate) use staged::OutputSet;

/// A file being written: a temp file beside its destination, removed unless committed.
pub(crate) struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    out: Option<BufWriter<File>>,
}

/// The hidden names `.<name>.<tag>-<pid>-<n>` beside `dest` (n = 0, 1, … 999) that this process
/// may create for it: temp files (`tmp`) and backups of replaced files (`old`). Each caller takes
/// the first that does not exist yet.
pub(crate) fn sibling_names<'a>(
    dest: &'a Path,
    tag: &'a str,
) -> impl Iterator<Item = PathBuf> + 'a {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let pid = std::process::id();
    (0..1000u32).map(move |n| dir.join(format!(".{name}.{tag}-{pid}-{n}")))
}

impl AtomicFile {
    /// Creates `.<name>.tmp-<pid>-<n>` next to `dest` (the first free `n`; files of other
    /// processes, live or dead, are never touched: see the [module docs](self)). A `dest` that
    /// is a symlink to a regular file is written through (see `staged::resolve_destination`).
    pub(crate) fn create(dest: &Path) -> Result<AtomicFile> {
        let dest = &staged::resolve_destination(dest)?;
        for tmp in sibling_names(dest, "tmp") {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => {
                    return Ok(AtomicFile {
                        tmp,
                        dest: dest.to_path_buf(),
                        out: Some(BufWriter::with_capacity(1 << 20, f)),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::from(ErrorKind::io("create", e)).with_path(tmp)),
            }
        }
        Err(Error::from(ErrorKind::io(
            "create",
            std::io::Error::other("no free temporary file name"),
        ))
        .with_path(dest))
    }

    /// Writes bytes.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match self.out.as_mut() {
            Some(w) => w
                .write_all(bytes)
                .map_err(|e| Error::from(ErrorKind::io("write", e)).with_path(&self.dest)),
            None => Ok(()),
        }
    }

    /// The buffered writer, for encoders that need `Write + Seek` (the zip writer).
    pub(crate) fn writer(&mut self) -> Result<&mut BufWriter<File>> {
        self.out.as_mut().ok_or_else(|| {
            Error::from(ErrorKind::io(
                "write",
                std::io::Error::other("file already committed"),
            ))
            .with_path(&self.dest)
        })
    }

    /// Appends `len` bytes of `file` from `offset`, copied inside the kernel where it can
    /// (`std::io::copy` between files uses `copy_file_range` on Linux, as `cp` does).
    pub(crate) fn copy_from(&mut self, file: &File, offset: u64, len: u64) -> Result<()> {
        let dest = &self.dest;
        let io = |op, e| Error::from(ErrorKind::io(op, e)).with_path(dest);
        let Some(w) = self.out.as_mut() else {
            return Ok(());
        };
        w.flush().map_err(|e| io("write", e))?;
        let mut from = file;
        from.seek(SeekFrom::Start(offset))
            .map_err(|e| io("seek input", e))?;
        let copied = std::io::copy(&mut from.take(len), w.get_mut()).map_err(|e| io("copy", e))?;
        if copied != len {
            return Err(io(
                "copy",
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "copied {copied} of {len} bytes: the input is shorter than when parsed"
                    ),
                ),
            ));
        }
        Ok(())
    }

    /// Appends `len` bytes of `file` from `offset`, read with `pread` into `scratch` (reused
    /// between calls) and written through the buffer: for pieces too small for a kernel copy of
    /// their own. Reading the file rather than the mapping keeps the input's pages out of this
    /// process: the page cache may hold the input in 2 MiB folios, and the first touch of a
    /// mapped byte can map its whole folio (ViT-L peaked 2 MiB higher for a 4 KiB bias).
    #[cfg(unix)]
    pub(crate) fn read_from(
        &mut self,
        file: &File,
        offset: u64,
        len: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        scratch.clear();
        scratch.resize(len, 0);
        file.read_exact_at(scratch, offset).map_err(|e| {
            let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(
                    e.kind(),
                    format!("read {len} bytes at {offset}: the input is shorter than when parsed"),
                )
            } else {
                e
            };
            Error::from(ErrorKind::io("read input", e)).with_path(&self.dest)
        })?;
        self.write_all(scratch)
    }

    /// Overwrites bytes already written at `offset` (flushing the buffer first).
    pub(crate) fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let dest = &self.dest;
        let io = |op, e| Error::from(ErrorKind::io(op, e)).with_path(dest);
        let Some(w) = self.out.as_mut() else {
            return Ok(());
        };
        w.seek(SeekFrom::Start(offset))
            .and_then(|_| w.write_all(bytes))
            .and_then(|()| w.seek(SeekFrom::End(0)))
            .map(|_| ())
            .map_err(|e| io("write", e))
    }

    /// Flushes the data to the file, so that only the rename remains: a full disk shows here,
    /// not at [`AtomicFile::commit`].
    pub(crate) fn sync(&mut self) -> Result<()> {
        let io = |op, e, p: &Path| Error::from(ErrorKind::io(op, e)).with_path(p);
        if let Some(w) = self.out.take() {
            w.into_inner()
                .map_err(|e| io("write", e.into_error(), &self.dest))?;
        }
        Ok(())
    }

    /// Syncs the (flushed, see [`AtomicFile::sync`]) temp file's data to disk: `fsync` applies
    /// to the file, whichever descriptor asks.
    pub(crate) fn sync_to_disk(&self) -> Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::from(ErrorKind::io("sync", e)).with_path(&self.dest))
    }

    /// Flushes and renames into place (without syncing to disk).
    pub(crate) fn commit(mut self) -> Result<()> {
        self.sync()?;
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| Error::from(ErrorKind::io("rename", e)).with_path(&self.dest))?;
        Ok(())
    }
}

/// The folders [`CreatedDirs::create`] made for an output folder: removed again (only while
/// empty, deepest first) when dropped before [`CreatedDirs::keep`], so a failed conversion into
/// a new `OUTDIR` leaves no empty folder behind. Folders that existed before are never touched.
#[must_use = "dropping it removes the folders it created"]
pub(crate) struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// Creates `dir` and its missing parents (`mkdir -p`), remembering which it created.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] (`create directory`) naming `dir`; what was created is removed again.
    pub(crate) fn create(dir: &Path) -> Result<CreatedDirs> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at.filter(|d| !d.as_os_str().is_empty()) {
            if std::fs::symlink_metadata(d).is_ok() {
                break;
            }
            missing.push(d.to_path_buf());
            at = d.parent();
        }
        let mut created = CreatedDirs(Vec::new());
        for d in missing.iter().rev() {
            match std::fs::create_dir(d) {
                Ok(()) => created.0.push(d.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
                Err(e) => {
                    return Err(Error::from(ErrorKind::io("create directory", e)).with_path(dir))
                }
            }
        }
        if !dir.is_dir() {
            let e = std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it exists and is not a directory",
            );
            return Err(Error::from(ErrorKind::io("create directory", e)).with_path(dir));
        }
        Ok(created)
    }

    /// Keeps the created folders (the outputs are in place).
    pub(crate) fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            // `remove_dir` removes only an empty folder: nothing put there by anyone is lost.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Whether two output paths name the same file: the same existing file (by device and inode,
/// through symlinks and hard links), or the same entry of the same folder (`./a` and `a`).
fn same_output(a: &Path, b: &Path) -> bool {
    use crate::fsio::FileId;
    if let (Some(x), Some(y)) = (FileId::of_path(a), FileId::of_path(b)) {
        if x == y {
            return true;
        }
    }
    let parent = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        FileId::of_path(dir)
    };
    a.file_name().is_some()
        && a.file_name() == b.file_name()
        && parent(a).is_some()
        && parent(a) == parent(b)
}

/// Refuses outputs that would replace one of `inputs` (the same file by device and inode, so
/// also through a symlink, a hard link or `./x`), and two outputs that name the same file.
/// Call it before writing anything.
///
/// ```
/// use std::path::Path;
/// let dir = tempfile::tempdir()?;
/// let input = dir.path().join("in.npy");
/// std::fs::write(&input, b"x")?;
/// let out = dir.path().join("out.npy");
/// assert!(vit_convert::write::check_outputs(&[&out], &[&input]).is_ok());
/// let same = dir.path().join(".").join("in.npy");
/// let e = vit_convert::write::check_outputs(&[&same], &[&input]).unwrap_err();
/// assert!(matches!(e.kind(), vit_convert::ErrorKind::OutputIsInput { output, .. } if *output == same));
/// let e = vit_convert::write::check_outputs(&[&out, &dir.path().join("./out.npy")], &[]).unwrap_err();
/// assert!(matches!(e.kind(), vit_convert::ErrorKind::OutputsCollide { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`ErrorKind::OutputIsInput`] naming the output and the input, [`ErrorKind::OutputsCollide`]
/// naming the two outputs.
pub fn check_outputs(outputs: &[&Path], inputs: &[&Path]) -> Result<()> {
    use crate::fsio::FileId;
    for (i, out) in outputs.iter().enumerate() {
        if let Some(id) = FileId::of_path(out) {
            if let Some(input) = inputs.iter().find(|p| FileId::of_path(p) == Some(id)) {
                return Err(ErrorKind::OutputIsInput {
                    output: out.to_path_buf(),
                    input: input.to_path_buf(),
                }
                .into());
            }
        }
        if let Some(other) = outputs
            .get(..i)
            .unwrap_or(&[])
            .iter()
            .find(|o| same_output(o, out))
        {
            return Err(ErrorKind::OutputsCollide {
                first: other.to_path_buf(),
                second: out.to_path_buf(),
            }
            .into());
        }
    }
    Ok(())
}

/// Tensors at least this large are copied file to file when they are a byte range of the input.
const KERNEL_COPY_MIN: u64 = 1 << 16;

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// One tensor to write: its name in the output file and its name in the source.
#[derive(Clone, Debug)]
pub struct WriteItem {
    /// Name in the output.
    pub name: String,
    /// Name in the source.
    pub source: String,
}

impl WriteItem {
    /// Every tensor of `src`, under its own name.
    ///
    /// ```
    /// let src = vit_convert::open("fixtures/convert/jax_vit/source.npz")?;
    /// let items = vit_convert::write::WriteItem::all(src.as_ref());
    /// assert_eq!(items.len(), src.tensors().len());
    /// assert_eq!(items[0].name, items[0].source);
    /// # Ok::<(), vit_convert::Error>(())
    /// ```
    pub fn all(src: &dyn TensorSource) -> Vec<WriteItem> {
        src.tensors()
            .iter()
            .map(|t| WriteItem {
                name: t.name.clone(),
                source: t.name.clone(),
            })
            .collect()
    }
}

/// Writes a safetensors file, streaming one tensor at a time from `src`. Tensors are sorted by
/// name; the header is padded with spaces to a multiple of 8; the bytes are deterministic.
///
/// `dtype` converts floating-point tensors (integers are kept); a cast that would turn finite
/// values into ±Inf is refused ([`ErrorKind::CastOverflow`]). Returns the file's size.
///
/// ```
/// use std::collections::BTreeMap;
/// use vit_convert::write::{write_safetensors, WriteItem};
/// use vit_convert::{source::MemorySource, DType, TensorSource};
///
/// // Any source works: here, two tensors of a checkpoint renamed on the way out, as f16.
/// let src = vit_convert::open("fixtures/convert/timm_vit/source.pth")?;
/// let items = [
///     WriteItem { name: "embeddings.cls_token".into(), source: "cls_token".into() },
///     WriteItem { name: "embeddings.position_embeddings".into(), source: "pos_embed".into() },
/// ];
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("part.safetensors");
/// let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
/// write_safetensors(&path, src.as_ref(), &items, Some(DType::F16), &meta)?;
///
/// let back = vit_convert::open(&path)?;
/// assert_eq!(back.tensors()[0].name, "embeddings.cls_token");
/// assert_eq!(back.tensors()[0].dtype, DType::F16);
///
/// // Tensors you computed yourself: a MemorySource.
/// let mut mine = MemorySource::new();
/// mine.insert("cls", back.read("embeddings.cls_token")?)?;
/// let items = [WriteItem { name: "cls".into(), source: "cls".into() }];
/// write_safetensors(&dir.path().join("mine.safetensors"), &mine, &items, None, &BTreeMap::new())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// I/O errors, or a source error while reading a tensor; the destination is then untouched.
pub fn write_safetensors(
    dest: &Path,
    src: &dyn TensorSource,
    items: &[WriteItem],
    dtype: Option<DType>,
    metadata: &BTreeMap<String, String>,
) -> Result<u64> {
    let (file, len) = stage_safetensors(dest, src, items, dtype, metadata, None)?;
    file.commit()?;
    Ok(len)
}

/// A `__metadata__` value known only once the tensors are written (the input's sha256, hashed
/// on another thread while they stream). Its length is fixed in advance, so the header is
/// written with a placeholder of that length first and rewritten in place at the end.
pub(crate) struct DeferredMeta<'a> {
    /// The metadata key.
    pub(crate) key: &'static str,
    /// The value's exact length in bytes.
    pub(crate) len: usize,
    /// Produces the value (called once, after the last tensor).
    pub(crate) value: &'a mut dyn FnMut() -> Result<String>,
}

/// The safetensors header for `plan`, padded with spaces to a multiple of 8: serde_json's compact
/// form of `{"__metadata__": {…}, "<name>": {"dtype", "shape", "data_offsets"}, …}` in plan
/// order, written straight into the text (no JSON tree: it held ~0.3 MiB at ViT-L's peak).
fn safetensors_header(
    metadata: &BTreeMap<String, String>,
    plan: &[(&WriteItem, DType, &[usize], u64)],
) -> Result<Vec<u8>> {
    let json = |e: serde_json::Error| ErrorKind::InvalidOption {
        reason: format!("header: {e}"),
    };
    let mut text = Vec::with_capacity(64 + 96 * plan.len());
    text.push(b'{');
    if !metadata.is_empty() {
        text.extend_from_slice(b"\"__metadata__\":");
        serde_json::to_writer(&mut text, metadata).map_err(json)?;
    }
    let mut offset = 0u64;
    for (it, out_dtype, shape, len) in plan {
        if text.len() > 1 {
            text.push(b',');
        }
        serde_json::to_writer(&mut text, &it.name).map_err(json)?;
        text.extend_from_slice(b":{\"dtype\":");
        serde_json::to_writer(&mut text, out_dtype.name()).map_err(json)?;
        text.extend_from_slice(b",\"shape\":");
        serde_json::to_writer(&mut text, shape).map_err(json)?;
        let end = offset
            .checked_add(*len)
            .ok_or_else(|| ErrorKind::InvalidLayout {
                reason: format!("{}: data offsets overflow", it.name),
            })?;
        text.extend_from_slice(format!(",\"data_offsets\":[{offset},{end}]}}").as_bytes());
        offset = end;
    }
    text.push(b'}');
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    Ok(text)
}

/// [`write_safetensors`] with one metadata value computed while the tensors stream, written to
/// a temp file to be committed by the caller (alone, or in an [`OutputSet`]).
pub(crate) fn stage_safetensors(
    dest: &Path,
    src: &dyn TensorSource,
    items: &[WriteItem],
    dtype: Option<DType>,
    metadata: &BTreeMap<String, String>,
    deferred: Option<DeferredMeta<'_>>,
) -> Result<(AtomicFile, u64)> {
    let mut items: Vec<&WriteItem> = items.iter().collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = items.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(ErrorKind::Duplicate {
            what: "output tensor",
            name: w[0].name.clone(),
        }
        .into());
    }
    let mut plan = Vec::with_capacity(items.len());
    let mut total = 0u64;
    for it in &items {
        if it.name == "__metadata__" {
            return Err(ErrorKind::InvalidOption {
                reason: "`__metadata__` cannot be a tensor name".into(),
            }
            .into());
        }
        let info = src
            .info(&it.source)
            .ok_or_else(|| ErrorKind::TensorNotFound {
                name: it.source.clone(),
            })?;
        let out_dtype = match dtype {
            Some(d) if info.dtype.is_float() && d.is_float() => d,
            _ => info.dtype,
        };
        let len =
            checked_byte_len(out_dtype, &info.shape).ok_or_else(|| ErrorKind::InvalidLayout {
                reason: format!("{} shape {:?} overflows", it.name, info.shape),
            })? as u64;
        plan.push((*it, out_dtype, info.shape.as_slice(), len));
        total += len;
    }
    let mut meta = metadata.clone();
    if let Some(d) = &deferred {
        meta.insert(d.key.to_string(), "0".repeat(d.len));
    }
    let text = safetensors_header(&meta, &plan)?;
    let mut out = AtomicFile::create(dest)?;
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(&text)?;
    #[cfg(unix)]
    let mut scratch = Vec::new();
    for &(it, out_dtype, _, len) in &plan {
        let t = src
            .read(&it.source)
            .map_err(|e| e.with_tensor(it.source.clone()))?;
        let (t, _) = cast_float_checked(t, out_dtype, false)
            .map_err(|e| e.with_tensor(it.source.clone()))?;
        if t.data.len() as u64 != len {
            return Err(Error::from(ErrorKind::InvalidLayout {
                reason: format!("read {} bytes, expected {len}", t.data.len()),
            })
            .with_tensor(it.source.clone()));
        }
        match src.locate(&t.data) {
            // Unmodified ranges of the input are read from the file, never through the mapping:
            // big ones go file to file in the kernel, small ones through the buffer.
            Some((file, at)) if len >= KERNEL_COPY_MIN => out.copy_from(file, at, len)?,
            #[cfg(unix)]
            Some((file, at)) => out.read_from(file, at, t.data.len(), &mut scratch)?,
            _ => out.write_all(&t.data)?,
        }
        drop(t);
        src.release_pages();
    }
    if let Some(d) = deferred {
        let value = (d.value)()?;
        if value.len() != d.len {
            return Err(ErrorKind::InvalidOption {
                reason: format!(
                    "metadata {} is {} bytes, {} were reserved",
                    d.key,
                    value.len(),
                    d.len
                ),
            }
            .into());
        }
        meta.insert(d.key.to_string(), value);
        let last = safetensors_header(&meta, &plan)?;
        if last.len() != text.len() {
            return Err(ErrorKind::InvalidOption {
                reason: format!("metadata {} changed the header's length", d.key),
            }
            .into());
        }
        out.write_at(8, &last)?;
    }
    out.sync()?;
    Ok((out, 8 + text.len() as u64 + total))
}

/// Reads `it.source` from `src` for a writer that stores each tensor whole (npz, Flax): cast to
/// `dtype` when given, and checked to hold exactly the bytes its dtype and shape say.
pub(crate) fn read_item<'s>(
    src: &'s dyn TensorSource,
    it: &WriteItem,
    dtype: Option<DType>,
) -> Result<crate::tensor::Tensor<'s>> {
    let t = src
        .read(&it.source)
        .map_err(|e| e.with_tensor(it.source.clone()))?;
    let t = match dtype {
        Some(d) => {
            cast_float_checked(t, d, false)
                .map_err(|e| e.with_tensor(it.source.clone()))?
                .0
        }
        None => t,
    };
    if checked_byte_len(t.dtype, &t.shape) != Some(t.data.len()) {
        return Err(Error::from(ErrorKind::InvalidLayout {
            reason: format!(
                "shape {:?} of {} does not match {} bytes",
                t.shape,
                t.dtype,
                t.data.len()
            ),
        })
        .with_tensor(it.name.clone()));
    }
    Ok(t)
}

/// Writes several files as one transaction: each is written to a temp file beside its
/// destination, then all are put in place together — if any step fails (a full disk, a directory
/// where a file should go, a failed rename), every destination is left exactly as it was.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
/// std::fs::write(&a, b"old")?;
/// std::fs::create_dir(&b)?; // b cannot be replaced: a keeps its old bytes
/// let e = vit_convert::write::write_files(&[(&a, b"new a"), (&b, b"new b")]).unwrap_err();
/// assert!(matches!(e.kind(), vit_convert::ErrorKind::NotRegularFile { kind: "directory" }));
/// assert_eq!(std::fs::read(&a)?, b"old");
/// vit_convert::write::write_files(&[(&a, b"new a")])?;
/// assert_eq!(std::fs::read(&a)?, b"new a");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`check_outputs`] for two paths naming one file; [`ErrorKind::NotRegularFile`] for a
/// destination that is a directory or special file; I/O errors.
pub fn write_files(files: &[(&Path, &[u8])]) -> Result<()> {
    let paths: Vec<&Path> = files.iter().map(|(p, _)| *p).collect();
    check_outputs(&paths, &[])?;
    let mut set = OutputSet::new();
    for (dest, bytes) in files {
        let mut out = AtomicFile::create(dest)?;
        out.write_all(bytes)?;
        set.push(out);
    }
    set.commit()
}

impl crate::verify::F32Array {
    /// Writes a float32 `.npy` file atomically (here rather than in [`verify`](crate::verify):
    /// atomic writes belong to this module, above it).
    ///
    /// # Errors
    /// I/O errors; as [`write_files`].
    pub fn write_npy(&self, path: impl AsRef<Path>) -> Result<()> {
        write_files(&[(path.as_ref(), &self.to_npy()?)])
    }
}

/// Writes a JSON document (pretty, trailing newline) atomically.
///
/// # Errors
/// I/O errors.
pub fn write_json(dest: &Path, value: &serde_json::Value) -> Result<()> {
    prepare_json(dest, value)?.commit()
}

/// Writes pretty JSON to a synced temp file beside `dest`, to be committed (renamed) later, so
/// that several files can be written first and put in place together ([`OutputSet`]).
pub(crate) fn prepare_json(dest: &Path, value: &serde_json::Value) -> Result<AtomicFile> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| ErrorKind::InvalidOption {
        reason: format!("json: {e}"),
    })?;
    text.push(b'\n');
    let mut out = AtomicFile::create(dest)?;
    out.write_all(&text)?;
    out.sync()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn files_named_like_temp_files_are_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        // Named as temp files of dead (Linux pids never exceed 2^22) and live processes would
        // be: a user's file, an input, a hard link, a symlink, a folder. None is this run's.
        let name = |pid: u32| dir.path().join(format!(".model.safetensors.tmp-{pid}-0"));
        let mine = name(999_999_989);
        std::fs::write(&mine, b"a user's file").unwrap();
        let input = name(999_999_990);
        std::fs::write(&input, b"an input").unwrap();
        drop(crate::fsio::open_regular(&input).unwrap());
        let linked = name(999_999_991);
        std::fs::write(&linked, b"hard linked").unwrap();
        std::fs::hard_link(&linked, dir.path().join("other-name")).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"target").unwrap();
        let symlink = name(999_999_992);
        std::os::unix::fs::symlink(&target, &symlink).unwrap();
        let subdir = name(999_999_993);
        std::fs::create_dir(&subdir).unwrap();
        let live = name(std::process::id());
        std::fs::write(&live, b"partial").unwrap();

        let f = AtomicFile::create(&dir.path().join("model.safetensors")).unwrap();
        assert_ne!(f.tmp, live, "a taken name is skipped");
        drop(f);
        for p in [&mine, &input, &linked, &symlink, &subdir, &target, &live] {
            assert!(p.exists(), "{} was removed", p.display());
        }
        assert_eq!(std::fs::read(&mine).unwrap(), b"a user's file");
        assert_eq!(std::fs::read(&input).unwrap(), b"an input");
    }

    #[test]
    fn outputs_are_told_apart_by_identity_not_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = d.join("in.npy");
        std::fs::write(&input, b"x").unwrap();
        // The output refused as the input, if any.
        let is_input = |r: Result<()>| match r.as_ref().map_err(Error::kind) {
            Ok(()) => None,
            Err(ErrorKind::OutputIsInput { output, input }) => {
                Some((output.clone(), input.clone()))
            }
            Err(other) => panic!("{other:?}"),
        };
        let out = d.join("out.npy");
        assert_eq!(is_input(check_outputs(&[&out], &[&input])), None);
        // `sub` does not exist: the path names no file, and nothing is refused for it.
        let m = is_input(check_outputs(&[&d.join("sub/../in.npy")], &[&input]));
        assert_eq!(m, None);
        let dot = d.join("./in.npy");
        let m = is_input(check_outputs(&[&dot], &[&input]));
        assert_eq!(m, Some((dot, input.clone())));
        #[cfg(unix)]
        {
            let link = d.join("link.npy");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            let m = is_input(check_outputs(&[&link], &[&input]));
            assert_eq!(m, Some((link, input.clone())));
            let hard = d.join("hard.npy");
            std::fs::hard_link(&input, &hard).unwrap();
            let m = is_input(check_outputs(&[&out, &hard], &[&input]));
            assert_eq!(m, Some((hard, input.clone())));
        }
        let twice = d.join(".").join("out.npy");
        let e = check_outputs(&[&out, &twice], &[]).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::OutputsCollide { first, second } if *first == out && *second == twice),
            "{e}"
        );
        // The one Display test of these messages.
        assert_eq!(
            e.kind().to_string(),
            format!(
                "outputs {} and {} name the same file",
                out.display(),
                twice.display()
            )
        );
        let dot = d.join("./in.npy");
        let e = check_outputs(&[&dot], &[&input]).unwrap_err();
        assert_eq!(
            e.kind().to_string(),
            format!(
                "output {} would overwrite the input {}; choose another output",
                dot.display(),
                input.display()
            )
        );
    }
    use crate::mmap::FileBytes;
    use crate::source::npy::write_npy;

    fn npy_source(values: &[f32]) -> Box<dyn TensorSource> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut npy = Vec::new();
        write_npy(&mut npy, DType::F32, &[values.len()], &data).unwrap();
        crate::source::open_bytes(FileBytes::from_vec(npy)).unwrap()
    }

    #[test]
    fn the_header_is_serde_json_compact_form_of_the_header_object() {
        let items: Vec<WriteItem> = ["a.weight", "b\"q\\uote\u{e9}\n", "c"]
            .iter()
            .map(|n| WriteItem {
                name: n.to_string(),
                source: n.to_string(),
            })
            .collect();
        let shapes: [&[usize]; 3] = [&[2, 3], &[], &[0, 5]];
        let plan: Vec<(&WriteItem, DType, &[usize], u64)> = vec![
            (&items[0], DType::F32, shapes[0], 24),
            (&items[1], DType::BF16, shapes[1], 2),
            (&items[2], DType::I64, shapes[2], 0),
        ];
        for metadata in [
            BTreeMap::new(),
            BTreeMap::from([
                ("format".to_string(), "pt".to_string()),
                ("z \"k\"".to_string(), "v\u{1}".to_string()),
            ]),
        ] {
            let mut object = serde_json::Map::new();
            if !metadata.is_empty() {
                object.insert("__metadata__".into(), serde_json::json!(metadata));
            }
            let mut offset = 0u64;
            for (it, dtype, shape, len) in &plan {
                object.insert(
                    it.name.clone(),
                    serde_json::json!({
                        "dtype": dtype.name(),
                        "shape": shape,
                        "data_offsets": [offset, offset + len],
                    }),
                );
                offset += len;
            }
            let mut want = serde_json::to_vec(&serde_json::Value::Object(object)).unwrap();
            while want.len() % 8 != 0 {
                want.push(b' ');
            }
            assert_eq!(
                String::from_utf8(safetensors_header(&metadata, &plan).unwrap()).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }

    #[test]
    fn deferred_metadata_writes_the_same_bytes_as_metadata_known_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let src = npy_source(&[1.0, 2.0, 3.0]);
        let name = src.tensors()[0].name.clone();
        let items = [WriteItem {
            name: "w".into(),
            source: name,
        }];
        let sha = "ab".repeat(32);
        let mut meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let mut value = || Ok(sha.clone());
        let late = DeferredMeta {
            key: "source_sha256",
            len: 64,
            value: &mut value,
        };
        let a = dir.path().join("a.safetensors");
        let (f, _) = stage_safetensors(&a, src.as_ref(), &items, None, &meta, Some(late)).unwrap();
        f.commit().unwrap();
        meta.insert("source_sha256".into(), sha.clone());
        let b = dir.path().join("b.safetensors");
        write_safetensors(&b, src.as_ref(), &items, None, &meta).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }

    #[test]
    fn deferred_metadata_of_the_wrong_length_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = npy_source(&[1.0]);
        let items = [WriteItem {
            name: "w".into(),
            source: src.tensors()[0].name.clone(),
        }];
        let mut value = || Ok("short".to_string());
        let late = DeferredMeta {
            key: "source_sha256",
            len: 64,
            value: &mut value,
        };
        let dest = dir.path().join("m.safetensors");
        let e = stage_safetensors(
            &dest,
            src.as_ref(),
            &items,
            None,
            &BTreeMap::new(),
            Some(late),
        );
        assert!(e.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn small_tensors_located_in_the_input_are_read_from_the_file_byte_for_byte() {
        // Tensors under KERNEL_COPY_MIN at unaligned offsets of a mapped input take the
        // `pread` path (never the mapping); the output holds exactly their bytes.
        let dir = tempfile::tempdir().unwrap();
        let mut mem = crate::source::MemorySource::new();
        let mut want = Vec::new();
        for (k, n) in [1usize, 3, 7, 1000].into_iter().enumerate() {
            let data: Vec<u8> = (0..n * 4).map(|i| (i * 7 + k) as u8).collect();
            let t = crate::tensor::Tensor::new(
                DType::F32,
                vec![n],
                std::borrow::Cow::Owned(data.clone()),
            )
            .unwrap();
            let name = format!("t{k}");
            mem.insert(&name, t).unwrap();
            want.push((name, data));
        }
        let input = dir.path().join("in.safetensors");
        write_safetensors(&input, &mem, &WriteItem::all(&mem), None, &BTreeMap::new()).unwrap();
        let src = crate::source::open(&input).unwrap();
        let items: Vec<WriteItem> = want
            .iter()
            .map(|(name, _)| {
                let t = src.read(name).unwrap();
                let (_, at) = src.locate(&t.data).expect("a mapped tensor is located");
                assert!((t.data.len() as u64) < KERNEL_COPY_MIN && at % 4096 != 0);
                WriteItem {
                    name: format!("out.{name}"),
                    source: name.clone(),
                }
            })
            .collect();
        let dest = dir.path().join("out.safetensors");
        write_safetensors(&dest, src.as_ref(), &items, None, &BTreeMap::new()).unwrap();
        let out = crate::source::open(&dest).unwrap();
        for (name, data) in &want {
            assert_eq!(
                &out.read(&format!("out.{name}")).unwrap().data[..],
                &data[..]
            );
        }
    }

    #[test]
    fn kernel_copied_tensors_match_the_source_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..100_000).map(|i| i as f32 * 0.5).collect();
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut npy = Vec::new();
        write_npy(&mut npy, DType::F32, &[values.len()], &data).unwrap();
        let input = dir.path().join("in.npy");
        std::fs::write(&input, &npy).unwrap();
        let src = crate::source::open(&input).unwrap();
        let name = src.tensors()[0].name.clone();
        assert!(src.locate(&src.read(&name).unwrap().data).is_some());
        let dest = dir.path().join("out.safetensors");
        let items = [WriteItem {
            name: "w".into(),
            source: name,
        }];
        write_safetensors(&dest, src.as_ref(), &items, None, &BTreeMap::new()).unwrap();
        let out = crate::source::open(&dest).unwrap();
        assert_eq!(&out.read("w").unwrap().data[..], &data[..]);
    }
}

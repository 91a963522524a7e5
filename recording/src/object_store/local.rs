//! [`LocalStore`]: objects as plain files under a root directory.
//!
//! `key` `a/b/c.webm` is the file `<root>/a/b/c.webm`; its content type is in the sidecar
//! `<root>/a/b/.c.webm.content-type` (derived from the extension when absent). Writes go to a
//! temporary `.<name>.tmp-<uuid>` in the same directory, are synced, then renamed over the target,
//! so a reader sees the old object or the new one, never a part. Names starting with `.` are never
//! keys ([`super::validate_key`]), so these files cannot collide with objects and are not listed.
//! Validated keys have no `..`, absolute or empty segments, so no key leads outside the root; the
//! walk of [`ObjectStore::list`] does not follow symbolic links.
//!
//! A filesystem cannot hold both an object `a/b` and objects under `a/b/`; storing the second
//! fails with [`ObjectError::Failed`] (S3 allows it; the recording layout does not need it).

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{
    ByteRange, ObjectBody, ObjectError, ObjectMeta, ObjectStore, content_type_for, validate_key, validate_prefix,
};

const READ_CHUNK: usize = 64 * 1024;

/// Objects as files under a root directory (created on the first write).
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store under `root` (made absolute against the current directory).
    pub fn new(root: PathBuf) -> Self {
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a (validated) key.
    fn path_of(&self, key: &str) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(key.split('/'));
        path
    }

    async fn content_type_of(path: &Path, key: &str) -> String {
        match fs::read_to_string(sidecar_of(path)).await {
            Ok(content_type) if !content_type.trim().is_empty() => content_type.trim().to_owned(),
            _ => content_type_for(key).to_owned(),
        }
    }

    /// Writes the content type sidecar, then runs `write_data` (which renames the data into place).
    async fn store(
        &self,
        key: &str,
        content_type: &str,
        write_data: impl AsyncFnOnce(&Path) -> io::Result<u64>,
    ) -> Result<u64, ObjectError> {
        validate_key(key)?;
        let path = self.path_of(key);
        let fail = |e: io::Error| store_error(key, &path, e);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).await.map_err(fail)?;
        }
        if fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
            return Err(ObjectError::Failed(format!(
                "cannot store {key:?} in {}: objects are stored under it as a prefix",
                self.describe()
            )));
        }
        let content_type = if content_type.is_empty() { content_type_for(key) } else { content_type };
        write_atomic(&sidecar_of(&path), async |file: &mut File| file.write_all(content_type.as_bytes()).await)
            .await
            .map_err(fail)?;
        let size = write_data(&path).await.map_err(fail)?;
        tracing::debug!(store = %self.describe(), key, size, "stored object");
        Ok(size)
    }
}

fn sidecar_of(path: &Path) -> PathBuf {
    hidden_sibling(path, ".content-type")
}

fn hidden_sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}{suffix}"))
}

/// Writes a file through a synced temporary sibling renamed over it.
pub(super) async fn write_atomic(path: &Path, write: impl AsyncFnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let temp = hidden_sibling(path, &format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp).await?;
        write(&mut file).await?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        fs::rename(&temp, path).await
    }
    .await;
    if result.is_err() {
        let _ = fs::remove_file(&temp).await;
    }
    result
}

/// Copies `source` to `dest` atomically; returns the size. A missing `source` is `NotFound`.
async fn copy_atomic(source: &Path, dest: &Path) -> io::Result<u64> {
    let mut input = File::open(source).await?;
    if input.metadata().await?.is_dir() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "a directory, not a file"));
    }
    let mut size = 0;
    write_atomic(dest, async |file: &mut File| {
        size = tokio::io::copy(&mut input, file).await?;
        Ok(())
    })
    .await?;
    Ok(size)
}

fn store_error(key: &str, path: &Path, e: io::Error) -> ObjectError {
    ObjectError::Failed(format!("storing {key:?} at {}: {e}", path.display()))
}

/// A read error: a missing file (or a file where a directory was expected) is `NotFound`.
fn read_error(key: &str, path: &Path, e: io::Error) -> ObjectError {
    if is_missing(&e) {
        ObjectError::NotFound(key.to_owned())
    } else {
        ObjectError::Failed(format!("reading {key:?} at {}: {e}", path.display()))
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        self.store(key, content_type, async |path: &Path| {
            write_atomic(path, async |file: &mut File| file.write_all(&body).await).await?;
            Ok(body.len() as u64)
        })
        .await
        .map(|_| ())
    }

    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<u64, ObjectError> {
        validate_key(key)?;
        // Checked first so that a missing source is not reported as a problem of the key.
        let meta =
            fs::metadata(path).await.map_err(|e| ObjectError::Failed(format!("uploading {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(ObjectError::Failed(format!("uploading {}: not a file", path.display())));
        }
        let source = path.to_owned();
        self.store(key, content_type, async move |dest: &Path| copy_atomic(&source, dest).await).await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, ObjectError> {
        validate_key(key)?;
        let source = self.path_of(key);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .await
                .map_err(|e| ObjectError::Failed(format!("creating {}: {e}", parent.display())))?;
        }
        copy_atomic(&source, path).await.map_err(|e| {
            if is_missing(&e) && !source.is_file() {
                ObjectError::NotFound(key.to_owned())
            } else {
                ObjectError::Failed(format!("copying {key:?} to {}: {e}", path.display()))
            }
        })
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ObjectBody, ObjectError> {
        validate_key(key)?;
        let path = self.path_of(key);
        let mut file = File::open(&path).await.map_err(|e| read_error(key, &path, e))?;
        let meta = file.metadata().await.map_err(|e| read_error(key, &path, e))?;
        if !meta.is_file() {
            return Err(ObjectError::NotFound(key.to_owned()));
        }
        let total = meta.len();
        let (start, end) = match range {
            Some(range) => range.resolve(total)?,
            None => (0, total.saturating_sub(1)),
        };
        let len = if total == 0 { 0 } else { end - start + 1 };
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await.map_err(|e| read_error(key, &path, e))?;
        }
        let content_type = Self::content_type_of(&path, key).await;
        let owned_key = key.to_owned();
        let body = futures_util::stream::try_unfold((file, len), move |(mut file, remaining)| {
            let key = owned_key.clone();
            async move {
                if remaining == 0 {
                    return Ok(None);
                }
                let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(READ_CHUNK);
                let mut buf = vec![0; want];
                let n = file.read(&mut buf).await.map_err(|e| ObjectError::Failed(format!("reading {key:?}: {e}")))?;
                if n == 0 {
                    return Err(ObjectError::Failed(format!("{key:?} was truncated while it was read")));
                }
                buf.truncate(n);
                Ok(Some((Bytes::from(buf), (file, remaining - n as u64))))
            }
        })
        .boxed();
        Ok(ObjectBody { total, start, end, content_type, body })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        validate_key(key)?;
        let path = self.path_of(key);
        match fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: meta.len(),
                content_type: Some(Self::content_type_of(&path, key).await),
            })),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(read_error(key, &path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        validate_prefix(prefix, true)?;
        // Start at the deepest directory the prefix names completely.
        let base_key = prefix.rsplit_once('/').map_or("", |(dirs, _)| dirs);
        let mut stack = vec![if base_key.is_empty() {
            (self.root.clone(), String::new())
        } else {
            (self.path_of(base_key), format!("{base_key}/"))
        }];
        let mut found = Vec::new();
        let fail = |dir: &Path, e: io::Error| ObjectError::Failed(format!("listing {}: {e}", dir.display()));
        while let Some((dir, dir_key)) = stack.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(fail(&dir, e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(|e| fail(&dir, e))? {
                let Ok(name) = entry.file_name().into_string() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let key = format!("{dir_key}{name}");
                let file_type = entry.file_type().await.map_err(|e| fail(&dir, e))?;
                if file_type.is_dir() {
                    let sub_key = format!("{key}/");
                    if sub_key.starts_with(prefix) || prefix.starts_with(&sub_key) {
                        stack.push((entry.path(), sub_key));
                    }
                } else if file_type.is_file() && key.starts_with(prefix) {
                    let size = entry.metadata().await.map_err(|e| fail(&dir, e))?.len();
                    found.push(ObjectMeta { key, size, content_type: None });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ObjectError> {
        validate_prefix(prefix, false)?;
        let mut deleted = 0;
        for object in self.list(prefix).await? {
            let path = self.path_of(&object.key);
            match fs::remove_file(&path).await {
                Ok(()) => deleted += 1,
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(ObjectError::Failed(format!("deleting {}: {e}", path.display()))),
            }
            let _ = fs::remove_file(sidecar_of(&path)).await;
            // Prune the directories this emptied (remove_dir fails on a non-empty one).
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == self.root || !d.starts_with(&self.root) || fs::remove_dir(d).await.is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        tracing::debug!(store = %self.describe(), prefix, deleted, "deleted objects");
        Ok(deleted)
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

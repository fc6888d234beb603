//! Object store over a directory: `ROOT/<bucket>/<key>`, atomic writes through a temporary file
//! and a rename (or a hard link, for create-if-absent, which fails if the name exists).
//!
//! User metadata lives in the file's own extended attributes, `user.sealbox.<name>`, set on
//! the temporary file before the rename: the rename publishes body and metadata in one step,
//! a refused create-new leaves the first object's untouched, and the bucket holds nothing but
//! objects (a sidecar file would need its own atomicity, its own sweep and hiding from
//! listings and from the inbox watcher). The cost is a file system with user xattrs (ext4,
//! XFS, btrfs, tmpfs since Linux 6.6); on one without, objects are written without their
//! metadata and a warning says so once (the metadata is a result's usage, not buyer data).

mod threads;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use sealbox_core::etag::ETag;
use sealbox_core::layout::{TEMP_PREFIX, check_key};
use sealbox_core::ports::object_store::{
    ByteStream, MAX_METADATA_BYTES, Metadata, ObjectMeta, ObjectStore, PutMode, PutOptions,
    check_metadata,
};
use sealbox_core::{Error, Result};

/// Object store on the local file system.
#[derive(Debug, Clone)]
pub struct FsObjectStore {
    root: Arc<PathBuf>,
    durable: bool,
    counter: Arc<AtomicU64>,
    // The root folder, opened once: every read resolves beneath it.
    root_fd: Arc<std::sync::Mutex<Option<Arc<rustix::fd::OwnedFd>>>>,
    listings: Arc<ListingCache>,
}

impl FsObjectStore {
    /// A store whose buckets are the folders of `root`. Writes survive a crash of the process;
    /// with `durable` they are also fsynced, to survive a crash of the machine.
    pub fn new(root: impl Into<PathBuf>, durable: bool) -> Self {
        FsObjectStore {
            root: Arc::new(root.into()),
            durable,
            counter: Arc::new(AtomicU64::new(0)),
            root_fd: Arc::default(),
            listings: Arc::default(),
        }
    }

    /// The folder of a bucket.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// The file behind `bucket/key`, after checking both.
    pub fn path_of(&self, bucket: &str, key: &str) -> Result<PathBuf> {
        check_bucket(bucket)?;
        check_key(key).map_err(|rule| Error::InvalidKey {
            key: key.to_owned(),
            rule,
        })?;
        Ok(self.root.join(bucket).join(key))
    }

    /// Metadata of a file as an object, computed from `stat` (no read): size, mtime and inode;
    /// no user metadata, as in a listing (head and get add it).
    pub fn meta_of(key: &str, md: &fs::Metadata) -> ObjectMeta {
        let mtime_ns = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
        let last_modified = OffsetDateTime::from_unix_timestamp_nanos(mtime_ns)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        ObjectMeta {
            key: key.to_owned(),
            size: md.len(),
            etag: ETag::new(format!("{:x}-{:x}-{:x}", md.ino(), mtime_ns, md.len())),
            last_modified,
            metadata: Metadata::new(),
        }
    }

    fn temp_path(&self, target: &Path) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{TEMP_PREFIX}{}-{n}.tmp", std::process::id());
        target.with_file_name(name)
    }

    /// Creates the temporary file next to `target` and returns its path and handle.
    fn begin(&self, target: &Path) -> Result<(PathBuf, fs::File)> {
        let tmp = self.temp_path(target);
        let create = || {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
        };
        // The folder usually exists: made only when the first create says it is missing.
        let file = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = target.parent() {
                    fs::create_dir_all(dir)
                        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                }
                create()
            }
            created => created,
        }
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        Ok((tmp, file))
    }

    /// Publishes the temporary file, with its metadata, under its final name.
    fn commit(
        &self,
        bucket: &str,
        key: &str,
        tmp: &Path,
        file: fs::File,
        target: &Path,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        if let Err(e) = write_metadata(&file, &opts.metadata) {
            let _ = fs::remove_file(tmp);
            return Err(e.context(bucket, key));
        }
        let mode = opts.mode;
        // Our own file's size, time and inode (what the ETag is made of): a rename keeps them,
        // and a concurrent overwrite of the target after ours must not lend us its tag.
        let synced = if self.durable {
            file.sync_all().map_err(|e| ("syncing", e))
        } else {
            Ok(())
        };
        let md = match synced.and_then(|()| file.metadata().map_err(|e| ("reading", e))) {
            Ok(md) => md,
            Err((what, e)) => {
                let _ = fs::remove_file(tmp);
                return Err(Error::io(format!("{what} {}", tmp.display()), e));
            }
        };
        drop(file);
        let published = match mode {
            PutMode::Overwrite => fs::rename(tmp, target),
            PutMode::CreateNew => rename_no_replace(tmp, target),
        };
        if let Err(e) = published {
            let _ = fs::remove_file(tmp);
            return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyExists {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                }
            } else {
                Error::io(format!("publishing {}", target.display()), e)
            });
        }
        if self.durable
            && let Some(dir) = target.parent()
        {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))?;
        }
        let mut meta = Self::meta_of(key, &md);
        meta.metadata = opts.metadata;
        Ok(meta)
    }

    /// Removes temporary files left by writers that died mid-write (their process is gone).
    pub fn sweep_temp_files(&self, bucket: &str) -> Result<usize> {
        check_bucket(bucket)?;
        fn sweep(dir: &Path, removed: &mut usize) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    sweep(&path, removed);
                } else if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
                    let pid = rest.split('-').next().unwrap_or("");
                    if !writer_is_dead(pid) {
                        continue;
                    }
                    if fs::remove_file(&path).is_ok() {
                        *removed += 1;
                    }
                }
            }
        }
        let mut removed = 0;
        sweep(&self.root.join(bucket), &mut removed);
        Ok(removed)
    }

    fn put_sync(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let target = self.path_of(bucket, key)?;
        check_metadata(&opts.metadata)?;
        if opts.mode == PutMode::CreateNew && target.exists() {
            // Cheap early answer; the link below is what makes it race-free.
            return Err(Error::AlreadyExists {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        let (tmp, mut file) = self.begin(&target)?;
        if let Err(e) = file.write_all(body) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(format!("writing {}", tmp.display()), e));
        }
        self.commit(bucket, key, &tmp, file, &target, opts)
    }

    fn get_sync(&self, bucket: &str, key: &str, max: u64) -> Result<(ObjectMeta, Bytes)> {
        let path = self.path_of(bucket, key)?;
        let (mut file, md) = self.open_object(bucket, key)?;
        let too_large = |size| Error::TooLarge {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size,
            limit: max,
        };
        if md.len() > max {
            return Err(too_large(md.len()));
        }
        let mut buf = Vec::with_capacity(md.len() as usize);
        // Read one byte past the cap, in case the file grew since the stat.
        (&mut file)
            .take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if buf.len() as u64 > max {
            return Err(too_large(buf.len() as u64));
        }
        Ok((
            Self::meta_with_metadata(bucket, key, &file, &md)?,
            Bytes::from(buf),
        ))
    }

    /// [`Self::meta_of`] plus the metadata of the open file: what head and get answer.
    fn meta_with_metadata(
        bucket: &str,
        key: &str,
        file: &fs::File,
        md: &fs::Metadata,
    ) -> Result<ObjectMeta> {
        let mut meta = Self::meta_of(key, md);
        meta.metadata = read_metadata(file).map_err(|e| e.context(bucket, key))?;
        Ok(meta)
    }

    fn head_sync(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        // Checks the bucket and key; the path itself is resolved beneath the root.
        self.path_of(bucket, key)?;
        match self.open_object(bucket, key) {
            Ok((file, md)) => Self::meta_with_metadata(bucket, key, &file, &md).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list_sync(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectMeta>> {
        check_bucket(bucket)?;
        let base = self.root.join(bucket);
        // Walk from the deepest folder the prefix names in full.
        let dir_part = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        if !dir_part.is_empty() {
            check_key(dir_part).map_err(|rule| Error::InvalidKey {
                key: prefix.to_owned(),
                rule,
            })?;
        }
        let start = if dir_part.is_empty() {
            base.clone()
        } else {
            base.join(dir_part)
        };
        let mut page = Vec::new();
        let walk = Walk {
            base: &base,
            prefix,
            start_after,
            max,
            listings: &self.listings,
        };
        walk.dir(&start, &mut page)?;
        Ok(page)
    }
}

/// One listing page: a walk in key order that starts at `start_after` by binary search in each
/// folder's sorted listing and stops once `max` keys are found.
struct Walk<'a> {
    base: &'a Path,
    prefix: &'a str,
    start_after: Option<&'a str>,
    max: usize,
    listings: &'a ListingCache,
}

/// An entry of a folder, by the key it stands for (a folder's ends in `/`): sorting by that is
/// sorting by the keys beneath.
#[derive(Debug)]
struct Child {
    sort_key: String,
    is_dir: bool,
}

impl Walk<'_> {
    fn dir(&self, dir: &Path, out: &mut Vec<ObjectMeta>) -> Result<()> {
        let Some(children) = self.listings.sorted(self.base, dir)? else {
            return Ok(());
        };
        // Everything up to here lies at or before `start_after` (a folder only if the key is
        // not beneath it): skip it without reading it.
        let first = self.start_after.map_or(0, |s| {
            children.partition_point(|c| {
                c.sort_key.as_str() <= s && !(c.is_dir && s.starts_with(c.sort_key.as_str()))
            })
        });
        for child in &children[first..] {
            if out.len() >= self.max {
                break;
            }
            let key = child.sort_key.as_str();
            if child.is_dir {
                if key.starts_with(self.prefix) || self.prefix.starts_with(key) {
                    self.dir(&self.base.join(key), out)?;
                }
            } else if key.starts_with(self.prefix)
                && let Ok(md) = fs::metadata(self.base.join(key))
                && md.is_file()
            {
                out.push(FsObjectStore::meta_of(key, &md));
            }
        }
        Ok(())
    }
}

/// Sorted listings of the largest folders, reused while a folder is unchanged: paging through
/// a folder of n objects reads it once, not once per page.
#[derive(Debug, Default)]
struct ListingCache {
    entries: std::sync::Mutex<std::collections::VecDeque<Listing>>,
}

#[derive(Debug)]
struct Listing {
    dir: PathBuf,
    mtime: std::time::SystemTime,
    children: Arc<Vec<Child>>,
}

/// Folders with fewer entries are read again each time: cheap, and nothing to keep.
const CACHED_FROM: usize = 1024;
/// Listings kept.
const CACHED_LISTINGS: usize = 8;
/// A folder changed less than this before it was read may change again within the same tick
/// of its modification time; its listing is not kept.
const QUIET: std::time::Duration = std::time::Duration::from_millis(50);

impl ListingCache {
    /// The entries of `dir` (objects and folders, not temporary files or non-UTF-8 names),
    /// sorted; `None` if there is no such folder.
    fn sorted(&self, base: &Path, dir: &Path) -> Result<Option<Arc<Vec<Child>>>> {
        let listing_error = |e| Error::io(format!("listing {}", dir.display()), e);
        let mtime = match fs::metadata(dir) {
            Ok(md) if md.is_dir() => md.modified().map_err(listing_error)?,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(listing_error(e)),
        };
        if let Ok(entries) = self.entries.lock()
            && let Some(hit) = entries.iter().find(|l| l.dir == dir && l.mtime == mtime)
        {
            return Ok(Some(hit.children.clone()));
        }
        let read_at = std::time::SystemTime::now();
        let mut children = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(listing_error(e)),
        };
        for entry in entries {
            let entry = entry.map_err(listing_error)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let path = entry.path();
            let Some(key) = path.strip_prefix(base).ok().and_then(|r| r.to_str()) else {
                continue;
            };
            let ft = entry.file_type().map_err(listing_error)?;
            if ft.is_dir() {
                children.push(Child {
                    sort_key: format!("{key}/"),
                    is_dir: true,
                });
            } else if ft.is_file() {
                children.push(Child {
                    sort_key: key.to_owned(),
                    is_dir: false,
                });
            }
        }
        children.sort_unstable_by(|a, b| a.sort_key.cmp(&b.sort_key));
        let children = Arc::new(children);
        let quiet = read_at.duration_since(mtime).is_ok_and(|d| d >= QUIET);
        if children.len() >= CACHED_FROM
            && quiet
            && let Ok(mut entries) = self.entries.lock()
        {
            entries.retain(|l| l.dir != dir);
            if entries.len() >= CACHED_LISTINGS {
                entries.pop_front();
            }
            entries.push_back(Listing {
                dir: dir.to_owned(),
                mtime,
                children: children.clone(),
            });
        }
        Ok(Some(children))
    }
}

/// True only if the process named by a temporary file's `pid` is known to be gone. Asks the
/// kernel (signal 0) rather than `/proc`, which a container may not mount; a name that is not a
/// pid, or any doubt (`EPERM`: alive under another user), keeps the file.
fn writer_is_dead(pid: &str) -> bool {
    let Some(pid) = pid
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::test_kill_process(pid),
        Err(e) if e == rustix::io::Errno::SRCH
    )
}

/// Renames `from` to `to` unless `to` exists (EEXIST): the local `If-None-Match: *`.
/// One renameat2(RENAME_NOREPLACE) where the file system has it, else link(2) + unlink(2).
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to).and_then(|()| fs::remove_file(from))
        }
        Err(e) => Err(e.into()),
    }
}

fn check_bucket(bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKey {
            key: bucket.to_owned(),
            rule: "bucket names are 3-63 of [a-z0-9.-]",
        })
    }
}

/// Names what a file that is not a regular file is, for error messages.
pub fn file_kind(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a folder"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// `ELOOP`: what a refused symbolic link reports.
fn eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

impl FsObjectStore {
    fn root_dir(&self) -> std::io::Result<Arc<rustix::fd::OwnedFd>> {
        use rustix::fs::{Mode, OFlags};
        let mut slot = self
            .root_fd
            .lock()
            .map_err(|_| std::io::Error::other("object store lock poisoned"))?;
        if let Some(fd) = slot.as_ref() {
            return Ok(fd.clone());
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = Arc::new(rustix::fs::open(self.root.as_path(), flags, Mode::empty())?);
        *slot = Some(fd.clone());
        Ok(fd)
    }

    /// Opens `bucket/key` for reading without leaving the store's root and without following
    /// a symbolic link on the way: a buyer who can create links must not read another buyer's
    /// objects through them. (Keys never hold `..`, so beneath the root is beneath the bucket.)
    ///
    /// The open never blocks: `O_NONBLOCK` keeps a FIFO (which a buyer can name as its input)
    /// from waiting for a writer, and the caller refuses anything but a regular file after
    /// `fstat`, before reading a byte.
    fn open_beneath(&self, bucket: &str, key: &str) -> std::io::Result<fs::File> {
        use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
        let rel = format!("{bucket}/{key}");
        let dir = self.root_dir()?;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
        match openat2(dir.as_ref(), rel.as_str(), flags, Mode::empty(), resolve) {
            Ok(fd) => Ok(fs::File::from(fd)),
            Err(e) if e == rustix::io::Errno::NOSYS => {
                // Kernels before 5.6: the resolved path must be the path itself.
                let path = self.root.join(&rel);
                if path.canonicalize()? != self.root.canonicalize()?.join(&rel) {
                    return Err(std::io::Error::from_raw_os_error(eloop()));
                }
                use std::os::unix::fs::OpenOptionsExt;
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(OFlags::NONBLOCK.bits() as i32 | OFlags::NOCTTY.bits() as i32)
                    .open(path)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens an object and reads its metadata. Only regular files are objects: anything else
    /// is [`Error::NotAFile`] (permanent), decided by `fstat` before any read.
    fn open_object(&self, bucket: &str, key: &str) -> Result<(fs::File, fs::Metadata)> {
        let not_a_file = |what| Error::NotAFile {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            what,
        };
        match self.open_beneath(bucket, key) {
            Ok(f) => match f.metadata() {
                Ok(md) if md.is_file() => Ok((f, md)),
                Ok(md) => Err(not_a_file(file_kind(&md.file_type()))),
                Err(e) => Err(Error::io(format!("reading {bucket}/{key}"), e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            }),
            Err(e)
                if e.raw_os_error() == Some(eloop())
                    || e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) =>
            {
                Err(not_a_file(
                    "a symbolic link, or reached through one (links are never followed)",
                ))
            }
            // A path through something that is not a folder (`a.json/x` where `a.json` is a
            // file) names no object, as on S3.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                Err(Error::NotFound {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                })
            }
            // The file's mode or owner keeps us out: S3's 403, an answer about this object.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Error::Unreadable {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                why: format!("permission denied ({e})"),
            }),
            Err(e) => Err(Error::io(format!("opening {bucket}/{key}"), e)),
        }
    }
}

/// The prefix of the extended attributes that hold an object's user metadata.
const XATTR_PREFIX: &str = "user.sealbox.";

/// Why reading or writing an object's metadata failed, before the object is named.
enum MetadataError {
    /// The file system or the syscall failed: ours.
    Io(&'static str, std::io::Error),
    /// The attributes are not metadata sealbox could have written (placed by hand): an answer
    /// about the object.
    Malformed(String),
}

impl MetadataError {
    fn context(self, bucket: &str, key: &str) -> Error {
        match self {
            MetadataError::Io(doing, e) => Error::io(format!("{doing} of {bucket}/{key}"), e),
            MetadataError::Malformed(why) => Error::Unreadable {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                why,
            },
        }
    }
}

/// Sets each entry as `user.sealbox.<name>` on the (still temporary) file.
fn write_metadata(file: &fs::File, metadata: &Metadata) -> std::result::Result<(), MetadataError> {
    for (name, value) in metadata {
        let attr = format!("{XATTR_PREFIX}{name}");
        rustix::fs::fsetxattr(
            file,
            attr.as_str(),
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .or_else(|e| {
            if e == rustix::io::Errno::NOTSUP {
                // Metadata is the usage of a result, not the buyer's data: on a file system
                // without user xattrs (NFS, old tmpfs) the object is still written, so
                // `sealbox demo` and `up` work anywhere; only `buyer usage` misses it.
                warn_no_xattrs();
                Ok(())
            } else {
                Err(MetadataError::Io("storing user metadata", e.into()))
            }
        })?;
    }
    Ok(())
}

/// Says once per process that this file system keeps no user metadata.
fn warn_no_xattrs() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "the data directory's file system has no user extended attributes: objects are \
             written without their metadata, so `sealbox buyer usage` cannot count results \
             (notifications still carry their usage)"
        );
    });
}

/// The `user.sealbox.*` attributes of an open object as its metadata. One syscall when the
/// file has no extended attributes at all; other attributes (SELinux labels, a user's own)
/// are left alone.
fn read_metadata(file: &fs::File) -> std::result::Result<Metadata, MetadataError> {
    let mut metadata = Metadata::new();
    let io = |e: rustix::io::Errno| MetadataError::Io("reading user metadata", e.into());
    let len = match rustix::fs::flistxattr_query(file) {
        Ok(0) => return Ok(metadata),
        Ok(len) => len,
        // No attributes can be there to read.
        Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(metadata),
        Err(e) => return Err(io(e)),
    };
    let mut names = vec![0u8; len];
    let len = rustix::fs::flistxattr(file, &mut names[..]).map_err(io)?;
    let mut value = vec![0u8; MAX_METADATA_BYTES];
    let mut total = 0usize;
    for attr in names[..len.min(names.len())].split(|b| *b == 0) {
        let Some(name) = attr.strip_prefix(XATTR_PREFIX.as_bytes()) else {
            continue;
        };
        let got = match rustix::fs::fgetxattr(file, attr, &mut value[..]) {
            Ok(got) => got,
            Err(e) if e == rustix::io::Errno::RANGE => {
                return Err(MetadataError::Malformed(
                    "its user metadata is over 2048 bytes".into(),
                ));
            }
            // Removed between the listing and the read.
            Err(e) if e == rustix::io::Errno::NODATA => continue,
            Err(e) => return Err(io(e)),
        };
        let (Ok(name), Ok(text)) = (
            std::str::from_utf8(name),
            std::str::from_utf8(&value[..got.min(value.len())]),
        ) else {
            return Err(MetadataError::Malformed(
                "its user metadata is not text".into(),
            ));
        };
        total += name.len() + text.len();
        metadata.insert(name.to_owned(), text.to_owned());
    }
    if total > MAX_METADATA_BYTES || check_metadata(&metadata).is_err() {
        return Err(MetadataError::Malformed(
            "its user metadata is not what S3 could hold (names [a-z0-9-], ASCII values, 2 KB)"
                .into(),
        ));
    }
    Ok(metadata)
}

/// Runs blocking file work off the async threads, on the store's own threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    threads::shared().run(f).await
}

#[async_trait]
impl ObjectStore for FsObjectStore {
    async fn put_opts(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let (this, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
        blocking(move || this.put_sync(&bucket, &key, &body, opts)).await
    }

    async fn put_stream_opts(
        &self,
        bucket: &str,
        key: &str,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let target = self.path_of(bucket, key)?;
        check_metadata(&opts.metadata)?;
        let (tmp, file) = {
            let (this, target) = (self.clone(), target.clone());
            blocking(move || this.begin(&target)).await?
        };
        let mut out = tokio::fs::File::from_std(file);
        let copied = async {
            tokio::io::copy(&mut body, &mut out).await?;
            tokio::io::AsyncWriteExt::flush(&mut out).await
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Error::io(format!("writing {}", tmp.display()), e));
        }
        let file = out.into_std().await;
        let (this, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
        blocking(move || this.commit(&bucket, &key, &tmp, file, &target, opts)).await
    }

    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<(ObjectMeta, Bytes)> {
        let (this, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
        blocking(move || this.get_sync(&bucket, &key, max_bytes)).await
    }

    async fn get_stream(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, ByteStream)> {
        // Checks the bucket and key; the path itself is resolved beneath the root.
        self.path_of(bucket, key)?;
        let (file, md) = {
            let (this, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
            blocking(move || this.open_object(&bucket, &key)).await?
        };
        let meta = Self::meta_with_metadata(bucket, key, &file, &md)?;
        let stream = tokio::fs::File::from_std(file).take(md.len());
        Ok((meta, Box::pin(stream)))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        let (this, bucket, key) = (self.clone(), bucket.to_owned(), key.to_owned());
        blocking(move || this.head_sync(&bucket, &key)).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectMeta>> {
        let (this, bucket, prefix) = (self.clone(), bucket.to_owned(), prefix.to_owned());
        let start_after = start_after.map(str::to_owned);
        blocking(move || this.list_sync(&bucket, &prefix, start_after.as_deref(), max)).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let path = self.path_of(bucket, key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("deleting {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, FsObjectStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = FsObjectStore::new(dir.path(), false);
        (dir, s)
    }

    #[tokio::test]
    async fn create_new_refuses_an_existing_object_and_keeps_the_first() {
        let (_d, s) = store();
        s.put(
            "outbox",
            "b/results/r.out",
            Bytes::from("one"),
            PutMode::CreateNew,
        )
        .await
        .unwrap();
        let second = s
            .put(
                "outbox",
                "b/results/r.out",
                Bytes::from("two"),
                PutMode::CreateNew,
            )
            .await;
        assert!(
            matches!(second, Err(Error::AlreadyExists { .. })),
            "{second:?}"
        );
        let (_, body) = s.get("outbox", "b/results/r.out", 10).await.unwrap();
        assert_eq!(&body[..], b"one");
    }

    #[tokio::test]
    async fn concurrent_create_new_has_exactly_one_winner() {
        let (_d, s) = store();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.put(
                    "outbox",
                    "b/r",
                    Bytes::from(format!("{i}")),
                    PutMode::CreateNew,
                )
                .await
                .is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);
    }

    #[tokio::test]
    async fn etag_changes_when_an_object_is_replaced() {
        let (_d, s) = store();
        let a = s
            .put("inbox", "k", Bytes::from("a"), PutMode::Overwrite)
            .await
            .unwrap();
        let b = s
            .put("inbox", "k", Bytes::from("b"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_ne!(a.etag, b.etag);
        assert_eq!(
            s.head("inbox", "k").await.unwrap().map(|m| m.etag),
            Some(b.etag)
        );
    }

    #[tokio::test]
    async fn reads_over_the_cap_are_refused() {
        let (_d, s) = store();
        s.put(
            "inbox",
            "k",
            Bytes::from(vec![0u8; 100]),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
        let r = s.get("inbox", "k", 99).await;
        assert!(
            matches!(
                r,
                Err(Error::TooLarge {
                    size: 100,
                    limit: 99,
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(matches!(
            s.get("inbox", "nope", 99).await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn keys_escaping_the_bucket_are_refused() {
        let (_d, s) = store();
        for key in ["../x", "/etc/passwd", "a/../../x", "a\0b"] {
            let r = s.put("inbox", key, Bytes::new(), PutMode::Overwrite).await;
            assert!(matches!(r, Err(Error::InvalidKey { .. })), "{key:?}: {r:?}");
        }
        let long = "k".repeat(1025);
        assert!(s.head("inbox", &long).await.is_err());
    }

    #[tokio::test]
    async fn listing_filters_by_prefix_in_key_order_and_skips_temp_files() {
        let (d, s) = store();
        for k in [
            "b/results/2.out",
            "b/results/1.out",
            "b/rejected/3.json",
            "c/results/4.out",
        ] {
            s.put("outbox", k, Bytes::from("x"), PutMode::Overwrite)
                .await
                .unwrap();
        }
        fs::write(d.path().join("outbox/b/results/.sbx-junk.tmp"), b"x").unwrap();
        let keys: Vec<_> = s
            .list("outbox", "b/re", None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(
            keys,
            ["b/rejected/3.json", "b/results/1.out", "b/results/2.out"]
        );
        let after: Vec<_> = s
            .list("outbox", "b/", Some("b/results/1.out"), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(after, ["b/results/2.out"]);
    }

    #[test]
    fn temp_files_of_dead_writers_are_swept_and_live_ones_kept() {
        let (d, s) = store();
        let dir = d.path().join("outbox/b/results");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(".sbx-999999999-1.tmp"), b"x").unwrap();
        let mine = format!(".sbx-{}-1.tmp", std::process::id());
        fs::write(dir.join(&mine), b"x").unwrap();
        assert_eq!(s.sweep_temp_files("outbox").unwrap(), 1);
        assert!(dir.join(mine).exists());
    }

    #[tokio::test]
    async fn objects_are_never_read_through_symbolic_links() {
        let (d, s) = store();
        s.put(
            "inbox",
            "b2/inputs/secret",
            Bytes::from("b2's data"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
        let b1 = d.path().join("inbox/b1");
        fs::create_dir_all(b1.join("inputs")).unwrap();
        std::os::unix::fs::symlink(d.path().join("inbox/b2/inputs/secret"), b1.join("inputs/x"))
            .unwrap();
        std::os::unix::fs::symlink(d.path().join("inbox/b2/inputs"), b1.join("linked")).unwrap();
        for key in ["b1/inputs/x", "b1/linked/secret"] {
            let got = s.get("inbox", key, 100).await;
            assert!(matches!(got, Err(Error::NotAFile { .. })), "{key}: {got:?}");
            assert!(!got.is_err_and(|e| e.is_retryable()), "{key}: permanent");
            assert!(s.head("inbox", key).await.is_err(), "{key}");
            assert!(s.get_stream("inbox", key).await.is_err(), "{key}");
        }
    }

    #[tokio::test]
    async fn a_fifo_is_refused_as_not_a_file_without_waiting_for_a_writer() {
        let (d, s) = store();
        let dir = d.path().join("inbox/b1/inputs");
        fs::create_dir_all(&dir).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, dir.join("pipe"), rustix::fs::Mode::RUSR).unwrap();
        fs::create_dir_all(dir.join("folder")).unwrap();
        // Without O_NONBLOCK the open would wait forever for a writer: this test would hang.
        for key in ["b1/inputs/pipe", "b1/inputs/folder"] {
            let got = s.get("inbox", key, 100).await;
            assert!(matches!(got, Err(Error::NotAFile { .. })), "{key}: {got:?}");
            assert!(
                matches!(
                    s.get_stream("inbox", key).await,
                    Err(Error::NotAFile { .. })
                ),
                "{key}"
            );
            assert!(matches!(
                s.head("inbox", key).await,
                Err(Error::NotAFile { .. })
            ));
        }
    }

    #[tokio::test]
    async fn pages_of_a_listing_cover_every_key_once_in_key_order() {
        let (_d, s) = store();
        // "a.b" sorts before "a/x" ('.' < '/') although the folder "a" sorts before "a.b".
        let mut keys = vec!["p/a.b", "p/a/x", "p/a/y/z", "p/a0", "p/b", "q/c"];
        for i in 0..25 {
            keys.push(Box::leak(format!("p/n/{i:03}").into_boxed_str()));
        }
        for k in &keys {
            s.put("outbox", k, Bytes::from("x"), PutMode::Overwrite)
                .await
                .unwrap();
        }
        let mut expected: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with("p/"))
            .map(|k| k.to_string())
            .collect();
        expected.sort();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = s.list("outbox", "p/", after.as_deref(), 4).await.unwrap();
            let Some(last) = page.last() else { break };
            assert!(page.len() <= 4);
            after = Some(last.key.clone());
            seen.extend(page.into_iter().map(|m| m.key));
        }
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn a_listing_kept_for_later_pages_sees_objects_added_and_removed_since() {
        let (d, s) = store();
        let dir = d.path().join("outbox/b/results");
        fs::create_dir_all(&dir).unwrap();
        for i in 0..CACHED_FROM + 10 {
            fs::write(dir.join(format!("{i:05}.out")), b"x").unwrap();
        }
        // Old enough to be kept: the folder is quiet.
        let old = std::time::SystemTime::now() - QUIET * 4;
        fs::File::open(&dir).unwrap().set_modified(old).unwrap();
        let page = |after: Option<String>| {
            let s = s.clone();
            async move {
                s.list("outbox", "b/results/", after.as_deref(), 1000)
                    .await
                    .unwrap()
            }
        };
        let first = page(None).await;
        assert_eq!(first.len(), 1000);
        fs::remove_file(dir.join("01001.out")).unwrap();
        fs::write(dir.join("99999.out"), b"x").unwrap();
        let rest: Vec<String> = page(first.last().map(|m| m.key.clone()))
            .await
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(rest.len(), CACHED_FROM + 10 - 1000);
        assert!(!rest.contains(&"b/results/01001.out".to_owned()));
        assert_eq!(rest.last().map(String::as_str), Some("b/results/99999.out"));
    }

    #[test]
    fn temp_files_are_kept_unless_their_writer_is_known_to_be_gone() {
        assert!(!writer_is_dead(&std::process::id().to_string()));
        assert!(!writer_is_dead("not-a-pid"));
        assert!(!writer_is_dead("1"), "init is alive (or not ours to judge)");
        assert!(writer_is_dead("999999999") || !Path::new("/proc/sys").exists());
    }

    #[tokio::test]
    async fn streams_round_trip_without_a_size_cap() {
        let (_d, s) = store();
        let data = vec![7u8; 3 * 1024 * 1024];
        let body: ByteStream = Box::pin(std::io::Cursor::new(data.clone()));
        s.put_stream("outbox", "big", body, PutMode::CreateNew)
            .await
            .unwrap();
        let (meta, mut r) = s.get_stream("outbox", "big").await.unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(back, data);
    }
}

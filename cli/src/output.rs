//! How the commands answer: the backend and data directory they read, errors in plain words,
//! and output.

use std::io::Write as _;
use std::path::Path;

use anyhow::bail;

use crate::stack::Paths;

/// Where the pipeline runs: `up` runs it there, and the buyer's and operator's commands
/// (`buyer submit`, `buyer results`, `status`, `dlq`) read and write its buckets and queues there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// On this machine: the data directory's buckets, SQLite queues and the sample model.
    #[default]
    Embedded,
    /// On AWS (or an emulator): S3, SQS, SNS and SageMaker, settings from the environment
    /// (SEALBOX_INBOX_BUCKET, ...; `sealbox aws bootstrap` prints them for a development stack).
    Aws,
}

/// The layout of `data`, refusing a folder that holds no sealbox data (a mistyped
/// `--data-dir`, or a command run in the wrong folder). Creates nothing: read-only commands
/// must not leave an empty data directory behind that later looks like a healthy, idle one.
pub(crate) fn existing_data(data: &Path) -> anyhow::Result<Paths> {
    let paths = Paths::new(data);
    let markers = [
        &paths.queue_db,
        &paths.buckets,
        &paths.keyset,
        &paths.subscriptions,
        &paths.token_url,
    ];
    if data.is_dir() && markers.iter().any(|p| p.exists()) {
        return Ok(paths);
    }
    let shown = data.display();
    let what = if data.exists() && !data.is_dir() {
        "it is a file, not a folder"
    } else if data.exists() {
        "the folder holds no queues, buckets or seller keys"
    } else {
        "there is no such folder"
    };
    bail!(
        "no sealbox data at {shown} ({what}): start a stack there with `sealbox up --data-dir \
         {shown}`, or point --data-dir (or SEALBOX_DATA_DIR) at the folder `sealbox up` uses"
    )
}

/// What an I/O error means, in words a user can act on (instead of "os error 2").
pub(crate) fn io_sentence(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "there is no such file or folder; check the path".into(),
        K::PermissionDenied => {
            "permission denied; check the owner and mode of the file and its folders".into()
        }
        K::IsADirectory => "it is a folder, not a file".into(),
        K::NotADirectory => "a part of the path is a file, not a folder".into(),
        K::AlreadyExists => "something already exists there".into(),
        K::StorageFull => "the disk is full; free some space and try again".into(),
        K::ReadOnlyFilesystem => "the file system is read-only".into(),
        K::BrokenPipe => "the reader closed the pipe".into(),
        _ => format!("{e}"),
    }
}

/// A store error as a sentence: what was being done, and the cause in words.
pub(crate) fn store_error(doing: &str, e: sealbox_core::Error) -> anyhow::Error {
    match e {
        sealbox_core::Error::Io { context, source } => {
            anyhow::anyhow!("{doing}: {context}: {}", io_sentence(&source))
        }
        other => anyhow::anyhow!("{doing}: {other}"),
    }
}

/// Writes `text` to standard output at once. A reader that went away (`| head`) ends the
/// command quietly, as it does for other command-line tools.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => bail!("writing to standard output: {}", io_sentence(&e)),
    }
}

/// Columns of text whose widths fit their widest cell; numbers are right-aligned. Widths only
/// grow, so a table printed a page at a time stays aligned as far as it can.
pub(crate) struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    widths: Vec<usize>,
}

impl Table {
    /// A table with these columns: `(title, right-aligned)`.
    pub(crate) fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            header: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            widths: columns.iter().map(|c| c.0.chars().count()).collect(),
        }
    }

    /// Widens the columns to fit `rows`.
    pub(crate) fn fit(&mut self, rows: &[Vec<String>]) {
        for row in rows {
            for (w, cell) in self.widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }

    fn line(&self, cells: &[&str], out: &mut String) {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            let width = self.widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            let right = self.right.get(i).copied().unwrap_or(false);
            if i > 0 {
                out.push_str("  ");
            }
            if right {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i < last {
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push('\n');
    }

    /// The header line.
    pub(crate) fn header(&self, out: &mut String) {
        let cells = self.header.clone();
        self.line(&cells, out);
    }

    /// One line per row.
    pub(crate) fn rows(&self, rows: &[Vec<String>], out: &mut String) {
        for row in rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            self.line(&cells, out);
        }
    }

    /// The whole table, header first, fitted to `rows`.
    pub(crate) fn render(mut self, rows: &[Vec<String>]) -> String {
        self.fit(rows);
        let mut out = String::new();
        self.header(&mut out);
        self.rows(rows, &mut out);
        out
    }
}

/// Seconds as a short duration in at most two units: `45s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn short_duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

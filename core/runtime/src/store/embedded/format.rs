//! The `FORMAT` file that names a directory as presenced's data directory:
//! the on-disk format version, the engine and the shard count the records
//! were last distributed for. Written atomically (temporary file, fsync,
//! rename, directory fsync). The README's "Durable state" section documents
//! the layout this version stands for.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Name of the format file inside the data directory.
pub const FORMAT_FILE: &str = "FORMAT";

/// The on-disk format this build reads and writes. Version 1: one fjall 3
/// database per shard in `shard-<n>/`, keyspace `records`, opaque keys and
/// values chosen by the caller.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &str = "presenced-data";
/// The file a new `FORMAT` is written to before it is renamed into place.
const TEMPORARY: &str = ".FORMAT.tmp";

/// What a `FORMAT` file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// On-disk format version.
    pub version: u32,
    /// Shard count the records are distributed for.
    pub shards: usize,
}

/// Why the `FORMAT` file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The directory has files but no `FORMAT`: not ours, leave it alone.
    #[error(
        "{dir} is not empty and has no {FORMAT_FILE} file: not a presenced data directory (refusing to write into it)"
    )]
    Foreign {
        /// The directory.
        dir: PathBuf,
    },
    /// The file is not one this build understands.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The `FORMAT` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Written by a newer build.
    #[error(
        "{path}: on-disk format version {found}, this presenced reads version {FORMAT_VERSION}; run a newer presenced"
    )]
    TooNew {
        /// The `FORMAT` file.
        path: PathBuf,
        /// The version it names.
        found: u32,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl Format {
    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "{MAGIC}\n# On-disk format of presenced's durable state; see README, \"Durable state\".\n\
             format = {}\nengine = fjall-3\nshards = {}\n",
            self.version, self.shards
        )
    }

    /// Parse a `FORMAT` file's text.
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(MAGIC) {
            return Err(format!("does not start with {MAGIC:?}"));
        }
        let mut version = None;
        let mut shards = None;
        for line in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(format!("unreadable line {line:?}"));
            };
            let value = value.trim();
            match name.trim() {
                "format" => version = Some(value.parse::<u32>().map_err(|e| format!("format: {e}"))?),
                "shards" => shards = Some(value.parse::<usize>().map_err(|e| format!("shards: {e}"))?),
                _ => {} // informative lines (engine) and later additions
            }
        }
        Ok(Format {
            version: version.ok_or("no format line")?,
            shards: shards.ok_or("no shards line")?,
        })
    }

    /// Read `dir`'s format: None for a new (missing or empty) directory.
    pub fn read(dir: &Path) -> Result<Option<Format>, FormatError> {
        let path = dir.join(FORMAT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let format = Format::parse(&text).map_err(|reason| FormatError::Unreadable {
                    path: path.clone(),
                    reason,
                })?;
                if format.version > FORMAT_VERSION {
                    return Err(FormatError::TooNew {
                        path,
                        found: format.version,
                    });
                }
                Ok(Some(format))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut entries = std::fs::read_dir(dir).map_err(|source| FormatError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
                // The lock file is ours and may already be there, and so may
                // the temporary file of a first FORMAT write cut short.
                let foreign = entries.any(|entry| {
                    entry.map_or(true, |entry| {
                        let name = entry.file_name();
                        name != super::lock::LOCK_FILE && name.to_str() != Some(TEMPORARY)
                    })
                });
                if foreign {
                    return Err(FormatError::Foreign { dir: dir.to_owned() });
                }
                Ok(None)
            }
            Err(source) => Err(FormatError::Io { path, source }),
        }
    }

    /// Replace `dir`'s format file atomically.
    pub fn write(&self, dir: &Path) -> Result<(), FormatError> {
        let path = dir.join(FORMAT_FILE);
        let temporary = dir.join(TEMPORARY);
        let written = (|| {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(self.render().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        written.map_err(|source| FormatError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_does_not_know() {
        let format = Format {
            version: FORMAT_VERSION,
            shards: 3,
        };
        assert_eq!(Format::parse(&format.render()), Ok(format));
        assert!(Format::parse("something else\nformat = 1\nshards = 1\n").is_err());
        assert!(Format::parse("presenced-data\nformat = x\nshards = 1\n").is_err());
        assert!(Format::parse("presenced-data\nshards = 1\n").is_err());

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Format::read(dir.path()).unwrap(), None, "an empty directory is new");
        std::fs::write(dir.path().join(TEMPORARY), "presenced-da").unwrap();
        std::fs::write(dir.path().join(super::super::lock::LOCK_FILE), "1").unwrap();
        assert_eq!(
            Format::read(dir.path()).unwrap(),
            None,
            "still new after a first start cut short"
        );
        format.write(dir.path()).unwrap();
        assert_eq!(Format::read(dir.path()).unwrap(), Some(format));
        std::fs::write(
            dir.path().join(FORMAT_FILE),
            "presenced-data\nformat = 99\nshards = 1\n",
        )
        .unwrap();
        assert!(matches!(
            Format::read(dir.path()),
            Err(FormatError::TooNew { found: 99, .. })
        ));

        let foreign = tempfile::tempdir().unwrap();
        std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
        assert!(matches!(Format::read(foreign.path()), Err(FormatError::Foreign { .. })));
    }
}

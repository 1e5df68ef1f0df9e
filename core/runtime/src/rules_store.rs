//! Durable storage of presentities' authorization rules: one file per
//! presentity in a directory, named after its canonical AOR
//! (percent-encoded) with `.xml`. A write goes to a temporary file in the
//! same directory, is fsynced, renamed over the old file and the directory
//! fsynced, so a crash leaves either the old document or the new one, never
//! a mix. At start every document is loaded into its owner shard.

use presence_proto::authz::PresRules;
use presence_proto::sip::uri::Uri;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Largest rules file loaded (the management plane accepts no larger).
const MAX_FILE: u64 = 256 << 10;
const SUFFIX: &str = ".xml";

/// Why the rules directory or a rules file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesStoreError {
    /// The directory cannot be created or listed.
    #[error("cannot use the rules directory {dir}: {source}")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A presentity's rules could not be written.
    #[error("cannot store the rules of {aor} in {path}: {source}")]
    Write {
        /// The presentity.
        aor: String,
        /// The file written.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
}

/// The rules directory.
#[derive(Clone, Debug)]
pub struct RulesStore {
    dir: PathBuf,
}

/// Rules as stored: (canonical AOR, compiled document).
pub type StoredRules = Vec<(String, PresRules)>;

/// A file that could not be loaded, and why (it is left where it is).
#[derive(Debug)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was not loaded.
    pub reason: String,
}

impl RulesStore {
    /// Use `dir`, creating it when missing.
    pub fn open(dir: &Path) -> Result<RulesStore, RulesStoreError> {
        std::fs::create_dir_all(dir).map_err(|source| RulesStoreError::Directory {
            dir: dir.to_owned(),
            source,
        })?;
        Ok(RulesStore { dir: dir.to_owned() })
    }

    /// The directory the rules are stored in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding a presentity's rules.
    pub fn path_of(&self, aor: &str) -> PathBuf {
        self.dir.join(file_name(aor))
    }

    /// Store a presentity's document atomically.
    pub fn write(&self, aor: &str, document: &[u8]) -> Result<(), RulesStoreError> {
        let path = self.path_of(aor);
        let error = |source| RulesStoreError::Write {
            aor: aor.to_owned(),
            path: path.clone(),
            source,
        };
        let temporary = self.dir.join(format!(".{}.{}.tmp", file_name(aor), std::process::id()));
        let written = (|| {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(document)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            self.sync_directory()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(error)
    }

    /// Remove a presentity's document (absent already is fine).
    pub fn remove(&self, aor: &str) -> Result<(), RulesStoreError> {
        let path = self.path_of(aor);
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_directory().map_err(|source| RulesStoreError::Write {
                aor: aor.to_owned(),
                path,
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RulesStoreError::Write {
                aor: aor.to_owned(),
                path,
                source,
            }),
        }
    }

    fn sync_directory(&self) -> std::io::Result<()> {
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Every stored document, compiled; files that cannot be used are
    /// reported and left alone (the previous good rules are not guessed).
    pub fn load_all(&self) -> Result<(StoredRules, Vec<Skipped>), RulesStoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| RulesStoreError::Directory {
            dir: self.dir.clone(),
            source,
        })?;
        let mut loaded = Vec::new();
        let mut skipped = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(SUFFIX) {
                continue; // a temporary file of an interrupted write, or not ours
            }
            let mut skip = |reason: String| {
                skipped.push(Skipped {
                    path: path.clone(),
                    reason,
                })
            };
            let Some(aor) = aor_of(name) else {
                skip("the file name is not a percent-encoded SIP, SIPS or TEL AOR".into());
                continue;
            };
            match std::fs::metadata(&path) {
                Ok(meta) if meta.len() > MAX_FILE => {
                    skip(format!("larger than {MAX_FILE} bytes"));
                    continue;
                }
                Err(e) => {
                    skip(e.to_string());
                    continue;
                }
                Ok(_) => {}
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| PresRules::parse(&bytes).map_err(|e| e.to_string()))
            {
                Ok(rules) => loaded.push((aor, rules)),
                Err(reason) => skip(reason),
            }
        }
        loaded.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((loaded, skipped))
    }
}

fn keeps(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'@' | b'+')
}

/// `sip:alice@example.com` → `sip%3Aalice@example.com.xml`.
pub fn file_name(aor: &str) -> String {
    let mut name = String::with_capacity(aor.len() + 8);
    for &byte in aor.as_bytes() {
        if keeps(byte) {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name.push_str(SUFFIX);
    name
}

/// The canonical AOR a file name stands for, when it is one.
pub fn aor_of(name: &str) -> Option<String> {
    let encoded = name.strip_suffix(SUFFIX)?;
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(byte);
            i += 1;
        }
    }
    let text = String::from_utf8(decoded).ok()?;
    let uri = Uri::parse(&text).ok()?;
    let mut aor = String::with_capacity(text.len());
    uri.write_aor(&mut aor);
    (aor == text).then_some(aor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"<ruleset xmlns="urn:ietf:params:xml:ns:common-policy"><rule id="a"/></ruleset>"#;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("presenced-rules-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn names_round_trip_and_only_canonical_aors_load() {
        for aor in ["sip:alice@example.com", "tel:+15550100", "sips:bob@[2001:db8::1]:5061"] {
            assert_eq!(aor_of(&file_name(aor)).as_deref(), Some(aor), "{}", file_name(aor));
        }
        assert_eq!(file_name("sip:a/b@x"), "sip%3Aa%2Fb@x.xml");
        assert_eq!(aor_of("sip%3AAlice@EXAMPLE.com.xml"), None, "not canonical");
        assert_eq!(aor_of("notes.txt"), None);
    }

    #[test]
    fn writes_replace_atomically_and_load_back() {
        let dir = scratch_dir("store");
        let store = RulesStore::open(&dir).unwrap();
        store.write("sip:alice@example.com", RULES.as_bytes()).unwrap();
        store
            .write("sip:alice@example.com", RULES.replace("\"a\"", "\"b\"").as_bytes())
            .unwrap();
        std::fs::write(dir.join("sip%3Abroken@example.com.xml"), "<ruleset").unwrap();
        std::fs::write(dir.join(".sip%3Ax@example.com.xml.1.tmp"), "partial").unwrap();
        let (loaded, skipped) = store.load_all().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0, "sip:alice@example.com");
        assert_eq!(loaded[0].1.rules.rules[0].id, "b");
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        store.remove("sip:alice@example.com").unwrap();
        store.remove("sip:alice@example.com").unwrap();
        assert!(store.load_all().unwrap().0.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

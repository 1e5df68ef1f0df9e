//! Where authorization rules changes are made durable (the rules
//! directory), and the lock that keeps the files in the order the owner
//! shard applied the changes.

use presence_runtime::rules_store::RulesStore;
use std::path::PathBuf;

/// Where rules changes are made durable, and the lock that orders them.
pub struct RulesWriter {
    dir: Option<PathBuf>,
    pub(crate) lock: tokio::sync::Mutex<()>,
}

impl RulesWriter {
    /// `dir`: the rules directory; `None` keeps rules in memory only.
    pub fn new(dir: Option<PathBuf>) -> Self {
        RulesWriter {
            dir,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Store (`Some`) or remove (`None`) a presentity's document.
    pub(crate) async fn persist(&self, aor: &str, document: Option<Vec<u8>>) -> Result<(), String> {
        let Some(dir) = self.dir.clone() else { return Ok(()) };
        let aor = aor.to_owned();
        let written = tokio::task::spawn_blocking(move || {
            let store = RulesStore::open(&dir)?;
            match document {
                Some(bytes) => store.write(&aor, &bytes),
                None => store.remove(&aor),
            }
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }
}

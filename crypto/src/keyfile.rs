//! Key files: one ed25519 key as JSON a person can read.
//!
//! ```json
//! { "type": "mosaic-ed25519-key", "public_key": "<64 hex>", "secret_key": "<64 hex>" }
//! ```
//! Files are created with mode 0600 and never overwritten unless asked. Reading checks
//! that the public key matches the secret, so a hand-edited file cannot sign under a
//! key other than the one it shows.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hexfmt;
use crate::sign::{Keypair, PublicKey, SECRET_KEY_LEN};

const KEY_FILE_TYPE: &str = "mosaic-ed25519-key";
/// Key files are tiny; anything bigger is not one.
const KEY_FILE_BYTES_MAX: u64 = 4096;

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Nothing at the path.
    #[error("key file {path} does not exist (create one with `mosaic keys new --out {path}`)")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// The file exists and overwriting was not requested.
    #[error(
        "key file {path} already exists; refusing to overwrite it (pass --force to replace it)"
    )]
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// The OS refused to read or write it.
    #[error("cannot {action} key file {path}: {source}")]
    Io {
        /// "read", "write", ...
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid key file.
    #[error("key file {path} is malformed: {reason}")]
    Malformed {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    #[serde(rename = "type")]
    kind: String,
    public_key: String,
    secret_key: String,
}

/// Writes `key` to `path` with mode 0600. Fails with `AlreadyExists` if the file is
/// there and `overwrite` is false. The write is fsynced before returning.
pub fn write_key_file(path: &Path, key: &Keypair, overwrite: bool) -> Result<(), KeyFileError> {
    let json = KeyFileJson {
        kind: KEY_FILE_TYPE.to_string(),
        public_key: key.public().to_string(),
        secret_key: hex::encode(key.secret_bytes()),
    };
    let mut text = serde_json::to_string_pretty(&json).map_err(|e| KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    let io_err = |action, source| KeyFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if overwrite {
        // Write beside the target, then rename over it, so a crash leaves either the
        // old key or the new one, never half a file.
        let tmp = path.with_extension("tmp-keyfile");
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, text.as_bytes()).map_err(|e| io_err("write", e))?;
        fs::rename(&tmp, path).map_err(|e| io_err("replace", e))?;
        return Ok(());
    }
    match write_new(path, text.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(KeyFileError::AlreadyExists {
                path: path.to_path_buf(),
            })
        }
        Err(e) => Err(io_err("write", e)),
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads a key file written by [`write_key_file`].
pub fn read_key_file(path: &Path) -> Result<Keypair, KeyFileError> {
    let malformed = |reason: String| KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let metadata = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => KeyFileError::Missing {
            path: path.to_path_buf(),
        },
        _ => KeyFileError::Io {
            action: "read",
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    if metadata.len() > KEY_FILE_BYTES_MAX {
        return Err(malformed(format!(
            "{} bytes is too large for a key file",
            metadata.len()
        )));
    }
    let text = fs::read_to_string(path).map_err(|e| KeyFileError::Io {
        action: "read",
        path: path.to_path_buf(),
        source: e,
    })?;
    let json: KeyFileJson = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    if json.kind != KEY_FILE_TYPE {
        return Err(malformed(format!(
            "type is {:?}, expected {KEY_FILE_TYPE:?}",
            json.kind
        )));
    }
    let secret = hexfmt::parse_fixed::<SECRET_KEY_LEN>(&json.secret_key, "secret key")
        .map_err(|e| malformed(e.to_string()))?;
    let key = Keypair::from_secret_bytes(secret).map_err(|e| malformed(e.to_string()))?;
    let shown: PublicKey = json
        .public_key
        .parse()
        .map_err(|e: crate::sign::SignError| malformed(e.to_string()))?;
    if shown != key.public() {
        return Err(malformed(format!(
            "public_key {shown} does not belong to the secret key (which gives {})",
            key.public()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn write_then_read_gives_the_same_key() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("k.json");
        let key = Keypair::generate()?;
        write_key_file(&path, &key, false)?;
        let back = read_key_file(&path)?;
        assert_eq!(back.public(), key.public());
        assert_eq!(back.secret_bytes(), key.secret_bytes());
        let text = fs::read_to_string(&path)?;
        assert!(text.contains(&key.public().to_string()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        Ok(())
    }

    #[test]
    fn refuses_to_overwrite_unless_told() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("k.json");
        let first = Keypair::generate()?;
        write_key_file(&path, &first, false)?;
        let second = Keypair::generate()?;
        assert!(matches!(
            write_key_file(&path, &second, false),
            Err(KeyFileError::AlreadyExists { .. })
        ));
        assert_eq!(read_key_file(&path)?.public(), first.public());
        write_key_file(&path, &second, true)?;
        assert_eq!(read_key_file(&path)?.public(), second.public());
        Ok(())
    }

    #[test]
    fn clear_errors_for_missing_and_malformed_files() -> TestResult {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("nope.json");
        assert!(matches!(
            read_key_file(&missing),
            Err(KeyFileError::Missing { .. })
        ));

        let bad = dir.path().join("bad.json");
        for text in [
            "not json",
            r#"{"type":"other","public_key":"00","secret_key":"00"}"#,
            r#"{"type":"mosaic-ed25519-key","public_key":"00","secret_key":"zz"}"#,
        ] {
            fs::write(&bad, text)?;
            assert!(
                matches!(read_key_file(&bad), Err(KeyFileError::Malformed { .. })),
                "{text}"
            );
        }
        // a public key that does not match the secret
        let a = Keypair::generate()?;
        let b = Keypair::generate()?;
        fs::write(
            &bad,
            format!(
                r#"{{"type":"mosaic-ed25519-key","public_key":"{}","secret_key":"{}"}}"#,
                b.public(),
                hex::encode(a.secret_bytes())
            ),
        )?;
        let err = read_key_file(&bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("does not belong"), "{err}");
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_file_is_an_io_error() -> TestResult {
        // A directory at the key path cannot be read as a file.
        let dir = tempfile::tempdir()?;
        assert!(matches!(
            read_key_file(dir.path()),
            Err(KeyFileError::Io { .. } | KeyFileError::Malformed { .. })
        ));
        Ok(())
    }
}

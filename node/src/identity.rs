//! The node's identity key on disk.
//!
//! The key is created on first start and kept as `DATA_DIR/identity.key`:
//! libp2p's protobuf encoding of the ed25519 key pair, readable by the owner
//! only (mode 0600).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use agora_protocol::Keypair;

/// Where the key lives inside a data dir.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("identity.key")
}

/// Errors loading or creating the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("identity key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a libp2p ed25519 key.
    #[error(
        "identity key {path} is not an ed25519 key in libp2p's encoding; move it away to create a new identity"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
}

/// Loads the key in `data_dir`, if there is one, making it readable by the
/// owner only if it was not.
pub fn load(data_dir: &Path) -> Result<Option<Keypair>, IdentityError> {
    let path = key_path(data_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IdentityError::Io { path, source }),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).map(|m| m.permissions().mode()).unwrap_or(0);
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the identity key was readable by others; making it owner-only");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|source| {
                IdentityError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
        }
    }
    let corrupt = || IdentityError::Corrupt { path: path.clone() };
    let kp = libp2p::identity::Keypair::from_protobuf_encoding(&bytes).map_err(|_| corrupt())?;
    let ed = kp.try_into_ed25519().map_err(|_| corrupt())?;
    let secret: [u8; 32] = ed.secret().as_ref().try_into().map_err(|_| corrupt())?;
    Ok(Some(Keypair::from_secret(secret)))
}

/// Loads the key in `data_dir`, creating one (mode 0600) if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    if let Some(kp) = load(data_dir)? {
        return Ok(kp);
    }
    let path = key_path(data_dir);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    crate::paths::create_private_dir(data_dir).map_err(io)?;
    let kp = Keypair::from_secret(rand::random());
    let bytes = crate::network::peer::libp2p_keypair(&kp)
        .to_protobuf_encoding()
        .map_err(|_| IdentityError::Corrupt { path: path.clone() })?;
    let tmp = path.with_extension("key.tmp");
    {
        let mut f = crate::paths::create_private_file(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, &path).map_err(io)?;
    Ok(kp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded_with_owner_only_permissions() {
        let dir = tempdir();
        let a = load_or_create(&dir).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&key_path(&dir)), 0o600);
            // A key left readable by others is made owner-only when loaded.
            fs::set_permissions(key_path(&dir), fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(load(&dir).unwrap().unwrap().node_id(), a.node_id());
            assert_eq!(mode(&key_path(&dir)), 0o600);
        }
        fs::write(key_path(&dir), b"garbage").unwrap();
        assert!(matches!(load(&dir), Err(IdentityError::Corrupt { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("agora-id-{}", rand::random::<u64>()));
        fs::create_dir_all(&d).unwrap();
        d
    }
}

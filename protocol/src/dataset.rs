//! Datasets: a named set of files published on the network by content.
//!
//! A dataset is a manifest, itself content: the list of its files, each a
//! name, a content id and a size, in name order. Its id is the blake3 of its
//! encoding, so a dataset id names exactly one set of bytes, and a node that
//! fetches the manifest from a stranger checks it like any other content.
//! Whoever holds a piece of content announces it under
//! [`content_key`] in the DHT; a node that lacks it asks those holders
//! (SPEC.md §4.3).
//!
//! The encoding is canonical: names are sorted and unique, so two nodes that
//! publish the same files get the same id.

use serde::{Deserialize, Serialize};

use crate::id::ContentId;
use crate::units::Bytes;
use crate::wire::{Decode, DecodeError, Encode, Limited, Reader, Writer};

/// Most files in one dataset.
pub const MAX_DATASET_FILES: usize = 65_536;
/// Longest file name in a dataset, in bytes.
pub const MAX_FILE_NAME: usize = 255;

/// One file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFile {
    /// Its name: one path component, as a task and its output are named.
    pub name: String,
    /// Its content.
    pub id: ContentId,
    /// Its size.
    pub size: Bytes,
}

crate::wire_struct!(DatasetFile {
    name < MAX_FILE_NAME,
    id,
    size
});

/// The manifest of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Its files, in strictly increasing name order.
    pub files: Vec<DatasetFile>,
}

/// Why a list of files is not a dataset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatasetError {
    /// No files.
    #[error("a dataset needs at least one file")]
    Empty,
    /// Too many files.
    #[error("a dataset has at most {MAX_DATASET_FILES} files, not {0}")]
    TooMany(usize),
    /// A name that cannot name a file on its own.
    #[error("`{0}` cannot name a dataset file: {1}")]
    BadName(String, &'static str),
    /// Names out of order or repeated.
    #[error("dataset files must be in strictly increasing name order: `{0}` comes after `{1}`")]
    Order(String, String),
}

impl Dataset {
    /// A dataset of `files`, sorted by name; an error if a name is bad or
    /// repeated.
    pub fn new(mut files: Vec<DatasetFile>) -> Result<Dataset, DatasetError> {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let d = Dataset { files };
        d.check()?;
        Ok(d)
    }

    /// Its id: blake3 of its encoding.
    pub fn id(&self) -> ContentId {
        ContentId::of(&self.to_bytes())
    }

    /// Total bytes of its files.
    pub fn bytes(&self) -> Bytes {
        Bytes(self.files.iter().map(|f| f.size.0).sum())
    }

    /// Checks the rules a decoded manifest must meet.
    pub fn check(&self) -> Result<(), DatasetError> {
        if self.files.is_empty() {
            return Err(DatasetError::Empty);
        }
        if self.files.len() > MAX_DATASET_FILES {
            return Err(DatasetError::TooMany(self.files.len()));
        }
        for f in &self.files {
            check_name(&f.name)?;
        }
        for w in self.files.windows(2) {
            if w[0].name >= w[1].name {
                return Err(DatasetError::Order(w[1].name.clone(), w[0].name.clone()));
            }
        }
        Ok(())
    }
}

/// Whether `name` can name a file of a dataset: one path component of at
/// most [`MAX_FILE_NAME`] bytes, not `.` or `..`, without `/`, `\` or
/// control characters.
pub fn check_name(name: &str) -> Result<(), DatasetError> {
    let bad = |why| Err(DatasetError::BadName(name.to_owned(), why));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_FILE_NAME {
        return bad("it is longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("it names a directory");
    }
    if name.contains(['/', '\\']) {
        return bad("it holds a path separator");
    }
    if name.chars().any(char::is_control) {
        return bad("it holds a control character");
    }
    Ok(())
}

impl Encode for Dataset {
    fn encode(&self, w: &mut Writer) {
        self.files.encode(w)
    }
}

impl Decode for Dataset {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let d = Dataset {
            files: Vec::decode_limited(r, MAX_DATASET_FILES, "dataset files")?,
        };
        d.check().map_err(|e| DecodeError::invalid("dataset", e))?;
        Ok(d)
    }
}

/// The DHT key under which holders of `id` register as providers.
pub fn content_key(id: &ContentId) -> Vec<u8> {
    format!("{}/content/{id}", crate::TOPIC_PREFIX).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, body: &[u8]) -> DatasetFile {
        DatasetFile {
            name: name.into(),
            id: ContentId::of(body),
            size: Bytes(body.len() as u64),
        }
    }

    #[test]
    fn the_same_files_in_any_order_give_the_same_id() {
        let a = Dataset::new(vec![file("a.txt", b"1"), file("b.txt", b"22")]).unwrap();
        let b = Dataset::new(vec![file("b.txt", b"22"), file("a.txt", b"1")]).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.bytes(), Bytes(3));
        assert_eq!(Dataset::from_bytes(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn a_manifest_out_of_order_or_with_a_repeated_name_does_not_decode() {
        let unsorted = Dataset {
            files: vec![file("b", b""), file("a", b"")],
        };
        assert!(Dataset::from_bytes(&unsorted.to_bytes()).is_err());
        let twice = Dataset {
            files: vec![file("a", b"1"), file("a", b"2")],
        };
        assert!(matches!(
            Dataset::from_bytes(&twice.to_bytes()),
            Err(DecodeError::InvalidValue { .. })
        ));
        assert_eq!(Dataset::new(vec![]), Err(DatasetError::Empty));
    }

    #[test]
    fn names_that_are_paths_or_hold_control_characters_are_refused() {
        for bad in ["", ".", "..", "a/b", "..\\x", "a\nb", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["part-0001.txt", "данные", ".hidden", "a b"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn content_keys_differ_per_id_and_carry_the_protocol_prefix() {
        let a = content_key(&ContentId::of(b"a"));
        assert!(a.starts_with(b"agora/1/content/"));
        assert_ne!(a, content_key(&ContentId::of(b"b")));
    }
}

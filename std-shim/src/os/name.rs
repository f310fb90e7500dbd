//! Channel names: which names are valid, and where each lives in `/dev/shm`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Prefix of every bips object in `/dev/shm`.
pub(crate) const PREFIX: &str = "bips.";
/// Prefix of an object being created (`bips..new-<pid>-<n>`): never a
/// channel's name, since a channel name cannot start with `.`. A producer
/// creates, locks and formats its segment under such a name and only then
/// renames it into place, so an object under a channel's name is always
/// complete and, while its producer lives, locked.
pub(crate) const STAGING_PREFIX: &str = "bips..new-";
/// Where Linux keeps POSIX shared-memory objects (a tmpfs).
pub(crate) const SHM_DIR: &str = "/dev/shm";
/// Longest user channel name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A validated channel name.
///
/// Rules: 1 to [`MAX_NAME_LEN`] (200) bytes, each one of `A-Z a-z 0-9 . _ -`;
/// not starting with `.` (so neither `.` nor `..`, nor a hidden file). The
/// shared-memory object is `/dev/shm/bips.<name>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName {
    /// `"bips.<name>"`.
    shm_name: String,
}

impl ChannelName {
    /// A name for an object that is not a user channel (a staging object,
    /// `bips..new-<pid>-<n>`), taken as is: the caller guarantees it is a
    /// single path component of the allowed characters.
    pub(crate) fn from_shm_name_unchecked(shm_name: String) -> Self {
        Self { shm_name }
    }

    /// Validates `name`; [`Error::InvalidName`] says which rule it breaks.
    pub fn new(name: &str) -> Result<Self> {
        let reason = if name.is_empty() {
            Some("the name is empty")
        } else if name.len() > MAX_NAME_LEN {
            Some("the name is longer than 200 bytes")
        } else if name == "." || name == ".." {
            Some("\".\" and \"..\" are not names")
        } else if name.starts_with('.') {
            Some("the name starts with '.'")
        } else if name.contains('/') {
            Some("the name contains '/'")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Some("the name contains a character other than A-Z, a-z, 0-9, '.', '_' and '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidName {
                name: name.to_owned(),
                reason,
            }),
            None => Ok(Self {
                shm_name: format!("{PREFIX}{name}"),
            }),
        }
    }

    /// The user's name, e.g. `"camera0"`.
    pub fn as_str(&self) -> &str {
        &self.shm_name[PREFIX.len()..]
    }

    /// The name given to `shm_open`, e.g. `"bips.camera0"` (no leading slash:
    /// rustix joins it to `/dev/shm/` itself).
    pub fn shm_name(&self) -> &str {
        &self.shm_name
    }

    /// The object's path, e.g. `/dev/shm/bips.camera0`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(SHM_DIR).join(&self.shm_name)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ChannelName").field(&self.as_str()).finish()
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl FromStr for ChannelName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ChannelName {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_validation() {
        let long_ok = "a".repeat(200);
        for good in [
            "a",
            "camera0",
            "cam.front-left_1",
            "A.B",
            "-x",
            "x..y",
            "x.",
            long_ok.as_str(),
        ] {
            let n = ChannelName::new(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
            assert_eq!(n.as_str(), good);
            assert_eq!(n.shm_name(), format!("bips.{good}"));
            assert_eq!(n.path(), PathBuf::from(format!("/dev/shm/bips.{good}")));
            assert_eq!(n.to_string(), good);
        }
        let long_bad = "a".repeat(201);
        let bad: &[(&str, &str)] = &[
            ("", "the name is empty"),
            (&long_bad, "the name is longer than 200 bytes"),
            (".", "\".\" and \"..\" are not names"),
            ("..", "\".\" and \"..\" are not names"),
            (".hidden", "the name starts with '.'"),
            ("a/b", "the name contains '/'"),
            ("/abs", "the name contains '/'"),
            (
                "sp ace",
                "the name contains a character other than A-Z, a-z, 0-9, '.', '_' and '-'",
            ),
            (
                "nul\0",
                "the name contains a character other than A-Z, a-z, 0-9, '.', '_' and '-'",
            ),
            (
                "caméra",
                "the name contains a character other than A-Z, a-z, 0-9, '.', '_' and '-'",
            ),
            (
                "a:b",
                "the name contains a character other than A-Z, a-z, 0-9, '.', '_' and '-'",
            ),
            (
                "a\\b",
                "the name contains a character other than A-Z, a-z, 0-9, '.', '_' and '-'",
            ),
        ];
        for (name, why) in bad {
            match ChannelName::new(name) {
                Err(Error::InvalidName { name: n, reason }) => {
                    assert_eq!(&n, name);
                    assert_eq!(reason, *why, "for {name:?}");
                }
                other => panic!("{name:?} should be invalid, got {other:?}"),
            }
        }
        // The message names the input and the rule.
        let msg = ChannelName::new("a b").unwrap_err().to_string();
        assert!(msg.contains("\"a b\"") && msg.contains("A-Z"), "{msg}");
        // Parsing entry points agree.
        assert!("ok".parse::<ChannelName>().is_ok());
        assert!(ChannelName::try_from("..").is_err());
    }
}

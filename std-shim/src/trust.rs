//! Whose channels this process attaches to (invariant T2).
//!
//! `/dev/shm` is writable by every local user: while a channel's producer is
//! down, anyone can create `/dev/shm/bips.<name>` (mode `0o666`) and feed its
//! own frames to every consumer that opens the name. So a consumer, and a
//! producer about to replace a stale object left under its name, first checks
//! who **owns** the object (`st_uid` of the open file, from `fstat`, so the
//! check and the mapping are of the same object):
//!
//! * by default ([`OwnerPolicy::EffectiveUid`]) only an object owned by this
//!   process's effective uid, or by root, is accepted. Root's objects are
//!   trusted because only root can make them and root can already do
//!   anything to this process (a system camera service running as root feeds
//!   users' programs without an opt-in); a root process accepts only root's
//!   objects, since root being fed a user's frames is exactly the attack;
//! * [`OwnerPolicy::Uids`] also accepts the listed uids (a producer running
//!   as another user, a container whose user maps to another uid);
//! * [`OwnerPolicy::Any`] accepts every owner (e.g. containers whose uids are
//!   not known in advance): the setting of a machine whose local users are all
//!   trusted.
//!
//! Set it with `trust_owner(uid)` / `trust_any_owner()` on
//! [`ConsumerOptions`](crate::ConsumerOptions) and [`Options`](crate::Options)
//! (Python: `trust_owner=uid` / `trust_any_owner=True`; C:
//! `bips_consumer_options_trust_owner` / `bips_options_trust_owner` and their
//! `_any_owner` forms). A refused object gives [`Error::UntrustedOwner`],
//! which names the owner and the option that would accept it.
//!
//! Monitoring (`bips list`, `bips inspect`, [`crate::monitor`]) does not
//! refuse: it shows the owner.

use std::os::fd::BorrowedFd;

use rustix::fs as rfs;
use rustix::io::Errno;
use rustix::shm;

use crate::error::{from_errno, Error, Result};
use crate::os::shm::ChannelName;

/// Which owners of a channel's shared-memory object are trusted.
///
/// ```
/// use bips::{ConsumerOptions, OwnerPolicy};
/// // Default: only objects owned by this process's effective uid (or root).
/// assert_eq!(ConsumerOptions::new().owner_policy(), &OwnerPolicy::EffectiveUid);
/// // A producer running as uid 1000 (e.g. a camera service's user):
/// let o = ConsumerOptions::new().trust_owner(1000);
/// assert_eq!(o.owner_policy(), &OwnerPolicy::Uids(vec![1000]));
/// assert!(o.owner_policy().trusts(1000, 0) && o.owner_policy().trusts(0, 0));
/// assert!(!o.owner_policy().trusts(65534, 0));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OwnerPolicy {
    /// Only objects owned by this process's effective uid or by root (the
    /// default; a root process so trusts uid 0 only).
    #[default]
    EffectiveUid,
    /// The effective uid, root, and these uids.
    Uids(Vec<u32>),
    /// Any owner: no check (all local users are trusted).
    Any,
}

impl OwnerPolicy {
    /// Whether an object owned by `owner` is trusted by a process whose
    /// effective uid is `euid`.
    pub fn trusts(&self, owner: u32, euid: u32) -> bool {
        match self {
            OwnerPolicy::EffectiveUid => owner == euid || owner == 0,
            OwnerPolicy::Uids(uids) => owner == euid || owner == 0 || uids.contains(&owner),
            OwnerPolicy::Any => true,
        }
    }

    /// This policy, also trusting `uid` (`Any` stays `Any`).
    pub fn with_uid(self, uid: u32) -> OwnerPolicy {
        match self {
            OwnerPolicy::EffectiveUid => OwnerPolicy::Uids(vec![uid]),
            OwnerPolicy::Uids(mut uids) => {
                if !uids.contains(&uid) {
                    uids.push(uid);
                }
                OwnerPolicy::Uids(uids)
            }
            OwnerPolicy::Any => OwnerPolicy::Any,
        }
    }

    /// [`Error::UntrustedOwner`] unless an object of channel `name` owned by
    /// `owner` is trusted by this process.
    pub(crate) fn check(&self, name: &ChannelName, owner: u32) -> Result<()> {
        let euid = effective_uid();
        if self.trusts(owner, euid) {
            Ok(())
        } else {
            Err(Error::UntrustedOwner {
                name: name.as_str().to_owned(),
                owner_uid: owner,
                euid,
            })
        }
    }
}

/// This process's effective uid (`geteuid`), the uid trusted by default.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail, has no preconditions and touches no memory
    // of ours.
    unsafe { libc::geteuid() }
}

/// The owner (`st_uid`) of the open file `fd`.
pub(crate) fn owner_of(fd: BorrowedFd<'_>, name: &ChannelName) -> Result<u32> {
    rfs::fstat(fd)
        .map(|st| st.st_uid)
        .map_err(|e| from_errno("fstat", name.as_str(), 0, e))
}

/// Removes the stale object open as `fd` (its producer proven dead by the caller,
/// which holds its byte-0 lock) from its channel's name, if the name still
/// names that very object. Unlike `Segment::unlink_if_same` it reports a
/// failure: `EPERM` means `/dev/shm`'s sticky bit keeps us (not the owner,
/// not root) from removing another user's object, and retrying cannot help.
pub(crate) fn remove_stale(fd: BorrowedFd<'_>, name: &ChannelName) -> Result<()> {
    let Ok(ours) = rfs::fstat(fd) else {
        return Ok(()); // cannot identify it: leave the name alone, retry
    };
    match rfs::lstat(name.path()) {
        Ok(now) if (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino) => {}
        _ => return Ok(()), // gone or replaced already
    }
    match shm::unlink(name.shm_name()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::PERM) => Err(Error::StaleNotRemovable {
            name: name.as_str().to_owned(),
            owner_uid: ours.st_uid,
            euid: effective_uid(),
        }),
        Err(e) => Err(from_errno("shm_unlink", name.as_str(), 0, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        let d = OwnerPolicy::default();
        assert_eq!(d, OwnerPolicy::EffectiveUid);
        assert!(d.trusts(1000, 1000));
        assert!(
            d.trusts(0, 1000),
            "a user trusts root's objects (only root can make them)"
        );
        assert!(
            !d.trusts(1000, 0),
            "root does not trust a user's objects by default"
        );
        let p = OwnerPolicy::default().with_uid(7).with_uid(8).with_uid(7);
        assert_eq!(p, OwnerPolicy::Uids(vec![7, 8]));
        assert!(p.trusts(7, 0) && p.trusts(8, 0) && p.trusts(0, 0));
        assert!(!p.trusts(9, 0));
        assert_eq!(OwnerPolicy::Any.with_uid(3), OwnerPolicy::Any);
        assert!(OwnerPolicy::Any.trusts(12345, 0));
    }

    #[test]
    fn refusal_names_owner_and_remedy() {
        let name = ChannelName::new("cam").unwrap();
        let euid = effective_uid();
        let other = euid.wrapping_add(1);
        let e = OwnerPolicy::default().check(&name, other).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::UntrustedOwner { owner_uid, .. } if owner_uid == other));
        assert!(msg.contains(&format!("owned by uid {other}")), "{msg}");
        assert!(msg.contains(&format!("trust_owner({other})")), "{msg}");
        assert!(msg.contains("trust_any_owner"), "{msg}");
        assert!(msg.contains("bips_consumer_options_trust_owner"), "{msg}");
        OwnerPolicy::default().check(&name, euid).unwrap();
        OwnerPolicy::default()
            .with_uid(other)
            .check(&name, other)
            .unwrap();
    }
}

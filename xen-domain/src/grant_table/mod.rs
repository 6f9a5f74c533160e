//! The grant table (Xen's `xen/common/grant_table.c`,
//! `xen/include/public/grant_table.h`): the hypervisor owns it, back ends
//! use it.
//!
//! - [`mapper`]: the table as domain 0 sees it, the only way a back end
//!   reaches guest pages (map a reference, read and write through the
//!   mapping while the entry is marked in use).
//! - [`op`]: `grant_table_op` for every guest (the project's guests own
//!   their table frames: `setup_table` takes their frame list).
//! - [`pvh_frames`]: the operations whose answer differs for Xen PVH
//!   guests, whose table frames are VMM pages (Xen's model).
//! - [`target`]: the domain-id check both apply.

pub mod mapper;
pub mod op;
pub mod pvh_frames;
pub mod target;

pub use mapper::{GrantError, GrantMapping, GrantTable, MAX_GRANT_FRAMES};

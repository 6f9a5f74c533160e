//! Virtual block device numbers: the integer under `device/vbd/<vdev>`
//! (and the front end's `virtual-device` key), and the disk names a user
//! writes for it.
//!
//! Specification: Xen's `docs/man/xen-vbd-interface.7.pandoc`, "Concrete
//! encoding in the VBD interface (in xenstore)" and "Configuration file
//! syntax". A name gives a disk type (`xvd`, `sd`, `hd`), a disk number and
//! a partition number (0 = the whole disk); a plain number is the
//! encoded value itself, as Xen's toolstack accepts for old guests.

/// Major number of Xen virtual disks in the short format.
pub const XVD_MAJOR: u32 = 202;
/// Major number of SCSI disks (`sd`).
pub const SD_MAJOR: u32 = 8;
/// Major number of IDE disks 0 and 1 (`hda`, `hdb`).
pub const HD_MAJOR_0: u32 = 3;
/// Major number of IDE disks 2 and 3 (`hdc`, `hdd`).
pub const HD_MAJOR_1: u32 = 22;
/// The extended `xvd` format's flag: `1 << 28 | disk << 8 | partition`.
pub const XVD_EXTENDED: u32 = 1 << 28;
/// Values from here on are reserved for future use.
pub const RESERVED_FROM: u32 = 2 << 28;
/// Disks the extended format can name: up to `(1 << 20) - 1`.
pub const XVD_MAX_DISKS: u32 = 1 << 20;

/// Why a disk name cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VdevError {
    /// Not `xvd<letters>[<n>]`, `sd<letters>[<n>]`, `hd<letters>[<n>]`,
    /// `d<n>[p<n>]` or a number.
    UnknownName,
    /// The disk or partition number is beyond what the type's encoding holds.
    OutOfRange,
    /// A plain number in the reserved range (`2 << 28` onwards).
    Reserved,
}

impl core::fmt::Display for VdevError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            VdevError::UnknownName => {
                "not a disk name: use xvda, xvdb, ... (Xen disks, xvda2 for a partition), sda..sdp, hda..hdd, d<disk>p<part>, or a device number"
            }
            VdevError::OutOfRange => {
                "out of range: xvd takes disks below 2^20 and partitions up to 255 (15 below xvdq), sd disks sda..sdp with partitions up to 15, hd disks hda..hdd with partitions up to 63"
            }
            VdevError::Reserved => "numbers from 2<<28 (536870912) on are reserved by Xen",
        })
    }
}

/// The disk types of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// Xen virtual disk, `xvd*` (and `d<n>p<n>`).
    Xvd,
    /// SCSI, `sd*`.
    Sd,
    /// IDE or AHCI, `hd*`.
    Hd,
}

/// The number of disk `disk`, partition `part` of type `ty`, as Xen's
/// table encodes it; `None` where that type's encoding has no room.
pub fn encode(ty: DiskType, disk: u32, part: u32) -> Option<u32> {
    match ty {
        DiskType::Xvd if disk < 16 && part < 16 => Some(XVD_MAJOR << 8 | disk << 4 | part),
        DiskType::Xvd if disk < XVD_MAX_DISKS && part < 256 => Some(XVD_EXTENDED | disk << 8 | part),
        DiskType::Sd if disk < 16 && part < 16 => Some(SD_MAJOR << 8 | disk << 4 | part),
        DiskType::Hd if disk < 2 && part < 64 => Some(HD_MAJOR_0 << 8 | disk << 6 | part),
        DiskType::Hd if disk < 4 && part < 64 => Some(HD_MAJOR_1 << 8 | (disk - 2) << 6 | part),
        _ => None,
    }
}

/// Parses a disk name (`xvda`, `xvdb2`, `xvdtq37`, `sdb3`, `hdc2`,
/// `d536p37`) or a plain device number (decimal, `0x` hex or `0` octal)
/// into the device number.
pub fn parse(name: &str) -> Result<u32, VdevError> {
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_number(name);
    }
    let (ty, disk, part) = if let Some(rest) = name.strip_prefix("xvd") {
        let (d, p) = letters_then_number(rest)?;
        (DiskType::Xvd, d, p)
    } else if let Some(rest) = name.strip_prefix("sd") {
        let (d, p) = letters_then_number(rest)?;
        (DiskType::Sd, d, p)
    } else if let Some(rest) = name.strip_prefix("hd") {
        let (d, p) = letters_then_number(rest)?;
        (DiskType::Hd, d, p)
    } else if let Some(rest) = name.strip_prefix('d') {
        let (d, p) = rest.split_once('p').unwrap_or((rest, "0"));
        (DiskType::Xvd, decimal(d)?, decimal(p)?)
    } else {
        return Err(VdevError::UnknownName);
    };
    encode(ty, disk, part).ok_or(VdevError::OutOfRange)
}

/// `letters[digits]`: the disk number the letters spell in bijective
/// base 26 (`a` = 0, `z` = 25, `aa` = 26: `xvdtq` is disk 536) and the
/// partition (0 when absent).
fn letters_then_number(s: &str) -> Result<(u32, u32), VdevError> {
    let split = s.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(s.len());
    let (letters, digits) = s.split_at(split);
    if letters.is_empty() {
        return Err(VdevError::UnknownName);
    }
    let mut disk: u32 = 0;
    for c in letters.bytes() {
        let digit = u32::from(c - b'a') + 1;
        disk = disk.checked_mul(26).and_then(|d| d.checked_add(digit)).ok_or(VdevError::OutOfRange)?;
    }
    let part = if digits.is_empty() { 0 } else { decimal(digits)? };
    Ok((disk - 1, part))
}

fn decimal(s: &str) -> Result<u32, VdevError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VdevError::UnknownName);
    }
    s.parse().map_err(|_| VdevError::OutOfRange)
}

fn parse_number(s: &str) -> Result<u32, VdevError> {
    let n = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8)
    } else {
        s.parse()
    };
    let n = n.map_err(|_| VdevError::UnknownName)?;
    if n >= RESERVED_FROM {
        return Err(VdevError::Reserved);
    }
    Ok(n)
}

/// A device number taken apart: type, disk and partition. Its
/// [`Display`](core::fmt::Display) is the name Xen's toolstack writes in
/// the back end's `dev` node (`xvda`, `xvdb2`, `xvdtq37`, `sdb3`, `hdc2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vdev {
    /// The disk type.
    pub ty: DiskType,
    /// The disk number (0 = `a`).
    pub disk: u32,
    /// The partition (0 = the whole disk).
    pub part: u32,
}

/// Takes a device number apart by Xen's table; `None` for numbers the
/// table calls deprecated or reserved.
pub fn decode(n: u32) -> Option<Vdev> {
    let v = |ty, disk, part| Some(Vdev { ty, disk, part });
    if n >= RESERVED_FROM {
        return None;
    }
    if n & XVD_EXTENDED != 0 {
        return v(DiskType::Xvd, (n >> 8) & (XVD_MAX_DISKS - 1), n & 0xff);
    }
    let minor = n & 0xff;
    match n >> 8 {
        XVD_MAJOR => v(DiskType::Xvd, minor >> 4, minor & 15),
        SD_MAJOR => v(DiskType::Sd, minor >> 4, minor & 15),
        HD_MAJOR_0 if minor < 128 => v(DiskType::Hd, minor >> 6, minor & 63),
        HD_MAJOR_1 if minor < 128 => v(DiskType::Hd, 2 + (minor >> 6), minor & 63),
        _ => None,
    }
}

impl core::fmt::Display for Vdev {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self.ty {
            DiskType::Xvd => "xvd",
            DiskType::Sd => "sd",
            DiskType::Hd => "hd",
        })?;
        // Bijective base 26, most significant letter first.
        let mut letters = [0u8; 8];
        let (mut i, mut n) = (letters.len(), self.disk + 1);
        while n > 0 {
            n -= 1;
            i -= 1;
            letters[i] = b'a' + (n % 26) as u8;
            n /= 26;
        }
        for &c in &letters[i..] {
            write!(f, "{}", c as char)?;
        }
        if self.part != 0 {
            write!(f, "{}", self.part)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    /// The examples of xen-vbd-interface(7), "Configuration file syntax"
    /// and "Concrete encoding in the VBD interface (in xenstore)".
    #[test]
    fn names_from_xen_vbd_interface_7() {
        assert_eq!(parse("xvda"), Ok(51712)); // 202 << 8
        assert_eq!(parse("d0"), Ok(51712));
        assert_eq!(parse("d0p0"), Ok(51712));
        assert_eq!(parse("xvdb"), Ok(51728)); // 202 << 8 | 1 << 4
        assert_eq!(parse("xvdb2"), Ok(51730));
        assert_eq!(parse("d1p2"), Ok(51730));
        assert_eq!(parse("xvdp15"), Ok(202 << 8 | 15 << 4 | 15), "last of the short format");
        // Disk 16 onwards: 1 << 28 | disk << 8 | partition.
        assert_eq!(parse("xvdq"), Ok(1 << 28 | 16 << 8));
        assert_eq!(parse("xvda16"), Ok(1 << 28 | 16), "partition 16 needs the extended format too");
        assert_eq!(parse("xvdtq37"), Ok(1 << 28 | 536 << 8 | 37));
        assert_eq!(parse("d536p37"), parse("xvdtq37"));
        assert_eq!(parse("xvdz"), Ok(1 << 28 | 25 << 8));
        assert_eq!(parse("xvdaa"), Ok(1 << 28 | 26 << 8));
        // sd: 8 << 8 | disk << 4 | partition.
        assert_eq!(parse("sda"), Ok(2048));
        assert_eq!(parse("sdb3"), Ok(8 << 8 | 1 << 4 | 3));
        // hd: 3 << 8 | disk << 6 | partition for disks 0..1, 22 << 8 for 2..3.
        assert_eq!(parse("hda"), Ok(768));
        assert_eq!(parse("hdb"), Ok(832));
        assert_eq!(parse("hdc2"), Ok(22 << 8 | 2));
        assert_eq!(parse("hdd"), Ok(22 << 8 | 1 << 6));
    }

    #[test]
    fn plain_numbers_are_the_value_itself() {
        assert_eq!(parse("51712"), Ok(51712));
        assert_eq!(parse("0xca00"), Ok(51712));
        assert_eq!(parse("0145000"), Ok(51712), "octal");
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("536870912"), Err(VdevError::Reserved), "2 << 28 onwards is reserved");
        assert_eq!(parse("99999999999"), Err(VdevError::UnknownName));
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "xvd", "xvdA", "vda", "xvda-1", "d", "dp1", "d1p", "xvda 1", "sd", "nvme0n1"] {
            assert_eq!(parse(bad), Err(VdevError::UnknownName), "{bad:?}");
        }
        for big in ["sdq", "sda16", "hde", "hda64", "xvda256", "d1048576", "xvdzzzzzzzzzzzzz"] {
            assert_eq!(parse(big), Err(VdevError::OutOfRange), "{big:?}");
        }
    }

    #[test]
    fn numbers_decode_to_the_names_that_encode_them() {
        for name in
            ["xvda", "xvdb2", "xvdp15", "xvdq", "xvdtq37", "xvda16", "sda", "sdb3", "hda", "hdb", "hdc2", "hdd63"]
        {
            let n = parse(name).unwrap();
            assert_eq!(decode(n).map(|v| v.to_string()).as_deref(), Some(name), "{n}");
        }
        assert_eq!(decode(51712), Some(Vdev { ty: DiskType::Xvd, disk: 0, part: 0 }));
        assert_eq!(decode(1 << 28 | ((1 << 20) - 1) << 8 | 255).map(|v| v.disk), Some((1 << 20) - 1));
        for deprecated in [0, 1, 203 << 8, 65 << 8, 3 << 8 | 128, 22 << 8 | 200, 2 << 28, u32::MAX] {
            assert_eq!(decode(deprecated), None, "{deprecated:#x}");
        }
    }
}

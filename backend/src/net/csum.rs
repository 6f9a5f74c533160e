//! Internet checksums for the frames netback forwards: a front end's
//! `NETTXF_csum_blank` frame gets its TCP/UDP checksum filled in here
//! before it reaches the host side.

/// Why a blank checksum could not be filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsumError {
    /// Not an unfragmented IPv4 TCP or UDP frame whose headers fit.
    #[error("checksum blank on a frame that is not unfragmented IPv4 TCP/UDP")]
    NotTcpUdp,
}

/// Adds `data` (big-endian 16-bit words) to a ones'-complement sum.
pub fn add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum += (w >> 48) + ((w >> 32) & 0xffff) + ((w >> 16) & 0xffff) + (w & 0xffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = rest.remainder() {
        sum += u64::from(*b) << 8;
    }
    sum
}

/// Folds a sum to 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// `(protocol, IP header start, L4 start, L4 end)` of an unfragmented
/// IPv4 frame.
fn l4(frame: &[u8]) -> Option<(u8, usize, usize, usize)> {
    l4_of(frame, frame.len())
}

/// [`l4`] from the first bytes (`head`) of a frame of `len` bytes.
fn l4_of(head: &[u8], len: usize) -> Option<(u8, usize, usize, usize)> {
    const IP: usize = pv_abi::netif::ETH_HLEN;
    if head.len() < IP + 20 || head[12..14] != [0x08, 0x00] || head[IP] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(head[IP] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([head[IP + 2], head[IP + 3]]));
    let frag = u16::from_be_bytes([head[IP + 6], head[IP + 7]]) & 0x3fff;
    if ihl < 20 || total < ihl || IP + total > len || frag != 0 {
        return None;
    }
    Some((head[IP + 9], IP, IP + ihl, IP + total))
}

/// The position of the TCP/UDP checksum field, if `proto` has one within `start..end`.
fn field(proto: u8, start: usize, end: usize) -> Option<usize> {
    let f = match proto {
        6 => start + 16,
        17 => start + 6,
        _ => return None,
    };
    (f + 2 <= end).then_some(f)
}

/// Prepares a blank checksum for the host to complete (virtio-net
/// `NEEDS_CSUM`): `head` is a copy of the first bytes of a frame of `len`
/// bytes; stores the pseudo-header sum in its checksum field and returns
/// `(csum_start, csum_offset)`. `None` (nothing changed) unless it is an
/// unfragmented IPv4 TCP/UDP frame whose checksum field lies in `head`
/// and whose datagram ends where the frame does (the host sums to the end).
pub fn prepare_partial(head: &mut [u8], len: usize) -> Option<(usize, usize)> {
    let (proto, ip, start, end) = l4_of(head, len)?;
    let f = field(proto, start, end).filter(|&f| f + 2 <= head.len() && end == len)?;
    let sum = add(0, &head[ip + 12..ip + 20]) + u64::from(proto) + (end - start) as u64;
    head[f..f + 2].copy_from_slice(&fold(sum).to_be_bytes());
    Some((start, f - start))
}

/// Computes and stores the TCP or UDP checksum of an IPv4 frame (over the
/// pseudo-header and segment, whatever the field held before).
pub fn fill(frame: &mut [u8]) -> Result<(), CsumError> {
    let (proto, ip, start, end) = l4(frame).ok_or(CsumError::NotTcpUdp)?;
    let field = field(proto, start, end).ok_or(CsumError::NotTcpUdp)?;
    frame[field..field + 2].fill(0);
    let mut sum = add(0, &frame[ip + 12..ip + 20]);
    sum += u64::from(proto) + (end - start) as u64;
    let mut c = !fold(add(sum, &frame[start..end]));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Whether an IPv4 TCP/UDP frame's checksum verifies (other frames: true).
pub fn verify(frame: &[u8]) -> bool {
    let Some((proto, ip, start, end)) = l4(frame) else { return true };
    if proto != 6 && proto != 17 {
        return true;
    }
    let mut sum = add(0, &frame[ip + 12..ip + 20]);
    sum += u64::from(proto) + (end - start) as u64;
    fold(add(sum, &frame[start..end])) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame with `payload`.
    pub(crate) fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (40 + payload.len()) as u16;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 1]);
        f[34..36].copy_from_slice(&7u16.to_be_bytes());
        f[36..38].copy_from_slice(&5000u16.to_be_bytes());
        f[46] = 0x50;
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn fill_then_verify_and_corruption_detected() {
        let mut f = tcp_frame(b"hello, odd length");
        assert!(!verify(&f) || f[50..52] == [0, 0]);
        f[50..52].copy_from_slice(&[0xde, 0xad]); // garbage in the field
        fill(&mut f).unwrap();
        assert!(verify(&f));
        f[60] ^= 1;
        assert!(!verify(&f));
    }

    #[test]
    fn fill_refuses_what_it_cannot_parse() {
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(fill(&mut arp), Err(CsumError::NotTcpUdp));
        let mut f = tcp_frame(b"x");
        f[16..18].copy_from_slice(&2000u16.to_be_bytes()); // total past the frame
        assert_eq!(fill(&mut f), Err(CsumError::NotTcpUdp));
    }

    #[test]
    fn a_prepared_partial_checksum_completes_as_the_host_does() {
        for udp in [false, true] {
            let mut f = tcp_frame(b"partial, odd length");
            if udp {
                f[23] = 17;
            }
            f[40..42].copy_from_slice(&[0xde, 0xad]); // garbage in the UDP field
            f[50..52].copy_from_slice(&[0xbe, 0xef]); // and in the TCP one
            let mut head = f[..60].to_vec();
            let (start, offset) = prepare_partial(&mut head, f.len()).unwrap();
            assert_eq!((start, offset), (34, if udp { 6 } else { 16 }));
            f[..60].copy_from_slice(&head);
            // What the kernel does for NEEDS_CSUM: sum from start, store.
            let c = !fold(add(0, &f[start..]));
            f[start + offset..start + offset + 2].copy_from_slice(&c.to_be_bytes());
            assert!(verify(&f), "udp={udp}");
        }
        let f = tcp_frame(b"x");
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 8]); // Ethernet padding past the datagram
        assert_eq!(prepare_partial(&mut padded.clone(), padded.len()), None);
        assert_eq!(prepare_partial(&mut f[..40].to_vec(), f.len()), None, "field not in the head");
    }

    #[test]
    fn matches_a_known_checksum() {
        // RFC 1071's example words sum to 0xddf2 (before complement).
        assert_eq!(fold(add(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
    }
}

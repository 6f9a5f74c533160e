//! A deterministic corpus runner for the stable toolchain: inputs are
//! built-in seeds mutated by a seeded xorshift generator (bit flips, byte
//! sets, interesting values, inserts, deletes, splices), a random walk over
//! a small pool of recent inputs. No coverage feedback: libFuzzer
//! (`fuzz/libfuzzer.sh`) adds that where it builds. Every execution is
//! counted; a panicking input is saved and reported.

use crate::targets::Target;
use pv_abi::event_channel::DOMID_SELF;

/// Largest input the runner makes.
pub const MAX_INPUT: usize = 8192;

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStats {
    /// Inputs executed.
    pub execs: u64,
    /// The first input that panicked, if any.
    pub crash: Option<Vec<u8>>,
}

/// xorshift64*: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

const INTERESTING: &[u64] = &[0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

/// One mutation of `buf` (kept at most [`MAX_INPUT`] bytes).
pub fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, other: &[u8]) {
    if buf.is_empty() {
        buf.push(rng.next_u64() as u8);
    }
    let at = rng.below(buf.len());
    match rng.below(8) {
        0 => buf[at] ^= 1 << rng.below(8),
        1 => buf[at] = rng.next_u64() as u8,
        2 => {
            let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            let n = [1, 2, 4, 8][rng.below(4)].min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&v[..n]);
        }
        3 => {
            let n = 1 + rng.below(64);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            buf.splice(at..at, bytes);
        }
        4 => {
            let n = 1 + rng.below(64.min(buf.len() - at));
            buf.drain(at..at + n);
        }
        5 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = 1 + rng.below(other.len() - from);
            buf.splice(at..at, other[from..from + n].iter().copied());
        }
        6 => {
            let n = 1 + rng.below(16.min(buf.len() - at));
            let chunk = buf[at..at + n].to_vec();
            buf.splice(at..at, chunk);
        }
        _ => {
            let v = rng.next_u64().to_le_bytes();
            let n = 8.min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&v[..n]);
        }
    }
    buf.truncate(MAX_INPUT);
}

/// Runs `target` on `iters` inputs derived from `seeds` with generator
/// seed `seed`. Stops at the first panicking input.
pub fn run(target: Target, seeds: &[Vec<u8>], iters: u64, seed: u64) -> RunStats {
    let mut rng = Rng::new(seed);
    let mut pool: Vec<Vec<u8>> = if seeds.is_empty() { vec![Vec::new()] } else { seeds.to_vec() };
    let mut execs = 0;
    while execs < iters {
        let base = &pool[rng.below(pool.len())];
        let other = pool[rng.below(pool.len())].clone();
        let mut input = if rng.below(16) == 0 {
            seeds.get(rng.below(seeds.len().max(1))).cloned().unwrap_or_default()
        } else {
            base.clone()
        };
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input, &other);
        }
        execs += 1;
        if std::panic::catch_unwind(|| target(&input)).is_err() {
            return RunStats { execs, crash: Some(input) };
        }
        if pool.len() < 64 {
            pool.push(input);
        } else {
            let i = rng.below(pool.len());
            pool[i] = input;
        }
    }
    RunStats { execs, crash: None }
}

fn le(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A hypercall-target input: data area, then calls `(selector, args)`.
fn hc(area: &[u8], calls: &[(u8, [u64; 5])]) -> Vec<u8> {
    let mut v = (area.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(area);
    for (sel, a) in calls {
        v.push(*sel);
        a.iter().for_each(|x| v.extend_from_slice(&x.to_le_bytes()));
    }
    v
}

/// Built-in seeds for the target `name`: well-formed inputs the mutations
/// start from.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "blkif" => {
            // One read of data page 0 (grant 16), sectors 0..=7.
            let mut req = vec![0u8; 112];
            req[1] = 1;
            req[8] = 1;
            req[24..28].copy_from_slice(&16u32.to_le_bytes());
            req[29] = 7;
            let mut write = req.clone();
            write[0] = 1;
            vec![le(&[&[1, 4], &req]), le(&[&[2, 4], &req, &write]), vec![0; 2]]
        }
        "netif" => {
            // One 60-byte packet from data page 0 (grant 16), two receive
            // buffers (grants 17, 18), one 100-byte frame from the host.
            let tx = le(&[
                &16u32.to_le_bytes(),
                &0u16.to_le_bytes(),
                &0u16.to_le_bytes(),
                &1u16.to_le_bytes(),
                &60u16.to_le_bytes(),
            ]);
            let rx = |id: u16, g: u32| le(&[&id.to_le_bytes(), &0u16.to_le_bytes(), &g.to_le_bytes()]);
            let frame = le(&[&100u16.to_le_bytes(), &[0x5a; 100]]);
            // A two-slot packet (more_data) with the sg feature.
            let first = le(&[
                &16u32.to_le_bytes(),
                &0u16.to_le_bytes(),
                &4u16.to_le_bytes(),
                &2u16.to_le_bytes(),
                &5000u16.to_le_bytes(),
            ]);
            let second = le(&[
                &17u32.to_le_bytes(),
                &0u16.to_le_bytes(),
                &0u16.to_le_bytes(),
                &3u16.to_le_bytes(),
                &904u16.to_le_bytes(),
            ]);
            vec![
                le(&[&[0, 1, 2], &tx, &rx(0, 17), &rx(1, 18), &frame]),
                le(&[&[1, 2, 2], &first, &second, &rx(0, 17), &rx(1, 18), &le(&[&5000u16.to_le_bytes(), &[7; 5000]])]),
                vec![2, 0, 0],
            ]
        }
        "store" => {
            let msg = |ty: u32, body: &[u8]| {
                le(&[
                    &ty.to_le_bytes(),
                    &7u32.to_le_bytes(),
                    &0u32.to_le_bytes(),
                    &(body.len() as u32).to_le_bytes(),
                    body,
                ])
            };
            vec![
                msg(2, b"/local/domain/1/name\0"),
                le(&[&msg(11, b"/local/domain/1/data/x\0value"), &msg(1, b"/local/domain/1\0")]),
                msg(4, b"/local/domain/1/data\0tok\0"),
            ]
        }
        "paging" => {
            // An mmu_update of the first pool entry and a TLB flush.
            let pool = (2u64 << 20) - (256 << 10);
            let area = le(&[&pool.to_le_bytes(), &0u64.to_le_bytes(), &6u32.to_le_bytes(), &[0; 12]]);
            vec![
                hc(&area, &[(0, [0, 1, 0, 0, 0])]),
                hc(&area, &[(1, [16, 1, 1, 0, 0])]),
                hc(&area, &[(3, [0, 3, 0x1003, 0, 0])]),
            ]
        }
        "gnttab" => {
            let query = le(&[&DOMID_SELF.to_le_bytes(), &[0; 14]]);
            vec![hc(&query, &[(1, [0, 0, 1, 0, 0])]), hc(&[0; 64], &[(2, [0, 0, 1, 0, 0]), (4, [1, 1, 0, 0, 0])])]
        }
        "evtchn" => {
            let alloc = le(&[&DOMID_SELF.to_le_bytes(), &0u16.to_le_bytes(), &0u32.to_le_bytes()]);
            vec![hc(&alloc, &[(0, [6, 0, 0, 0, 0]), (2, [1, 0, 0, 0, 0]), (4, [1, 0, 0, 0, 0]), (3, [0; 5])])]
        }
        "elf" => crate::targets::elf_seeds(),
        "virtio" => {
            // A live queue (flags 1) with one IN request of one sector: a
            // header, a data buffer and a status byte, chained.
            let desc = |addr: u64, len: u32, flags: u16, next: u16| {
                le(&[&addr.to_le_bytes(), &len.to_le_bytes(), &flags.to_le_bytes(), &next.to_le_bytes()])
            };
            let (hdr, buf, status) = (0x30000u64, 0x31000u64, 0x30010u64);
            let mut mem = le(&[&desc(hdr, 16, 1, 1), &desc(buf, 512, 3, 2), &desc(status, 1, 2, 0)]);
            mem.resize(0x1000, 0);
            mem.extend_from_slice(&[0, 0, 1, 0, 0, 0]); // avail: flags, idx 1, ring[0] = 0
            let with_regs = le(&[&[1, 1], &[0x70 / 4], &15u64.to_le_bytes(), &mem]);
            vec![le(&[&[1, 0], &mem]), le(&[&[3, 0], &mem]), with_regs, vec![0, 0]]
        }
        _ => Vec::new(),
    }
}

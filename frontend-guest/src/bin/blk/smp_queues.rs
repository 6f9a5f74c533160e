//! `queues=N` on several vCPUs (`vmm run --vcpus N`): the block workload
//! from every vCPU at once, each on its own queue. vCPU `q` binds queue
//! `q`'s event channel to itself (`EVTCHNOP_bind_vcpu`), so that queue's
//! responses interrupt only it, writes its own region of the disk
//! ([`super::MQ_REQUESTS`] 4 KiB writes, as many in flight as its ring
//! holds), flushes, waits until every vCPU has written, then reads the
//! *next* queue's region back and verifies it. vCPU 0 prints one line per
//! vCPU and the verdict.

use super::{MQ_REGION, MQ_REQUESTS};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use frontend_guest::blkfront::{self, BlkFront, IoBuf};
use frontend_guest::smp::{self, SpinLock};
use frontend_guest::{cpu, evtchn, println};
use pv_abi::blkif::{BLKIF_OP_WRITE, BLKIF_RSP_OKAY};

/// The queues, each taken by its vCPU while it works.
static QUEUES: SpinLock<[Option<BlkFront>; blkfront::MAX_QUEUES]> =
    SpinLock::new([const { None }; blkfront::MAX_QUEUES]);
/// How many queues (= working vCPUs).
static COUNT: AtomicU32 = AtomicU32::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);
/// vCPUs that finished writing (the barrier before the reads).
static WRITTEN: AtomicU32 = AtomicU32::new(0);
/// Per vCPU: its region read back intact.
static VERIFIED: [AtomicBool; blkfront::MAX_QUEUES] = [const { AtomicBool::new(false) }; blkfront::MAX_QUEUES];
/// Per vCPU: failed requests.
static BAD: [AtomicU64; blkfront::MAX_QUEUES] = [const { AtomicU64::new(0) }; blkfront::MAX_QUEUES];

/// Runs the workload on `qs.len()` vCPUs (vCPU 0 included); exit status.
pub fn run(qs: &mut [Option<BlkFront>], vcpus: u32, seed: u64) -> i32 {
    let n = qs.len().min(vcpus as usize);
    let Some(first) = qs.first().and_then(|q| q.as_ref()) else { return 73 };
    if first.info.sectors < n as u64 * MQ_REGION {
        println!("blk smp: the disk needs {} sectors for {} queues", n as u64 * MQ_REGION, n);
        return 1;
    }
    COUNT.store(n as u32, SeqCst);
    SEED.store(seed, SeqCst);
    {
        let mut all = QUEUES.lock();
        for (slot, q) in all.iter_mut().zip(qs.iter_mut()) {
            *slot = q.take();
        }
    }
    if let Err(e) = smp::start(n as u32, worker) {
        println!("blk smp: cannot bring the vCPUs up: {}", e.name());
        return 1;
    }
    worker(0);
    for c in 1..n as u32 {
        while !cpu::get(c).done.load(SeqCst) {
            core::hint::spin_loop();
        }
    }
    report(n)
}

/// One vCPU's part (module docs); marks the vCPU done.
fn worker(id: u32) {
    let this = cpu::get(id);
    let q = id as usize;
    let taken = QUEUES.lock().get_mut(q).and_then(Option::take);
    if let Some(mut d) = taken {
        if evtchn::bind_vcpu(d.port, id).is_err() {
            BAD[q].fetch_add(1, SeqCst);
        }
        let (requests, bad, verified) = queue_work(&mut d, q as u64);
        this.work.store(requests, SeqCst);
        BAD[q].fetch_add(bad, SeqCst);
        VERIFIED[q].store(verified, SeqCst);
        QUEUES.lock()[q] = Some(d);
    } else {
        // Still reach the barrier: the others wait for every vCPU.
        WRITTEN.fetch_add(1, SeqCst);
    }
    this.done.store(true, SeqCst);
}

/// Queue `q`'s writes, flush, barrier, reads: (requests, failed, verified).
fn queue_work(d: &mut BlkFront, q: u64) -> (u64, u64, bool) {
    let n = u64::from(COUNT.load(SeqCst));
    let seed = SEED.load(SeqCst);
    let Some(buf) = IoBuf::alloc(MQ_REQUESTS) else {
        WRITTEN.fetch_add(1, SeqCst);
        return (0, 1, false);
    };
    buf.fill(0, MQ_REQUESTS * 8, q * MQ_REGION, seed + q);
    let (mut sent, mut done, mut bad) = (0u64, 0u64, 0u64);
    while done < MQ_REQUESTS {
        while sent < MQ_REQUESTS {
            match d.queue_io(BLKIF_OP_WRITE, q * MQ_REGION + sent * 8, buf.gpa + sent * 4096, 8) {
                Ok(_) => sent += 1,
                Err(_) => break,
            }
        }
        d.push();
        match d.wait() {
            Ok(c) => bad += u64::from(c.status != BLKIF_RSP_OKAY),
            Err(_) => {
                bad += MQ_REQUESTS - done;
                break;
            }
        }
        done += 1;
    }
    bad += u64::from(!matches!(d.flush(), Ok(BLKIF_RSP_OKAY)));
    WRITTEN.fetch_add(1, SeqCst);
    while u64::from(WRITTEN.load(SeqCst)) < n {
        core::hint::spin_loop();
    }
    // The next queue's region, written by another vCPU.
    let r = (q + 1) % n;
    buf.set(0, MQ_REQUESTS * 8, 0);
    let mut reads = 0;
    for chunk in 0..MQ_REQUESTS * 8 / 32 {
        let ok = matches!(d.read(r * MQ_REGION + chunk * 32, buf.gpa + chunk * 32 * 512, 32), Ok(BLKIF_RSP_OKAY));
        bad += u64::from(!ok);
        reads += 1;
    }
    let verified = buf.check(0, MQ_REQUESTS * 8, r * MQ_REGION, seed + r).is_none();
    (MQ_REQUESTS + 1 + reads, bad, verified)
}

/// One line per vCPU, then the verdict; exit status.
fn report(n: usize) -> i32 {
    let mut good = 0;
    let mut bad_total = 0;
    for c in 0..n {
        let p = cpu::get(c as u32);
        let (bad, verified) = (BAD[c].load(SeqCst), VERIFIED[c].load(SeqCst));
        println!(
            "blk smp: cpu{}: queue={} requests={} bad={} upcalls={} verified={}",
            c,
            c,
            p.work.load(SeqCst),
            bad,
            p.upcalls.load(SeqCst),
            verified
        );
        good += usize::from(verified && bad == 0);
        bad_total += bad;
    }
    let misrouted = evtchn::misrouted();
    println!("blk smp: vcpus={} queues={} verified={}/{} bad={} misrouted={}", n, n, good, n, bad_total, misrouted);
    i32::from(good != n || misrouted != 0)
}

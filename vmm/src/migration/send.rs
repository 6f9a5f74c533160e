//! The source of a live migration: pre-copy rounds, then the
//! switch-over (pause, quiesce, last pages, image locks, state, end).
//!
//! It runs on a thread of its own ([`MigratorThread`], under
//! [`ThreadKind::Migration`]) started while the VM is built: the API
//! thread's filter allows no sockets but its own, and a thread inherits
//! its parent's filter. Requests reach it through a [`Migrator`] handle.

use super::dirty::{page_hash, zero_hash, DirtyLog, PageHashes};
use super::stream::{self, Kind, PAGES_PER_RECORD, PAGE_SIZE};
use super::{Connection, MigrationError, MigrationUrl, VmState};
use crate::control::VmControl;
use crate::memory::{GuestRam, Slot};
use crate::seccomp::ThreadKind;
use kvm_ioctls::VmFd;
use std::io::{BufWriter, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// At most this many pre-copy rounds after the first full pass.
pub const MAX_ROUNDS: u32 = 30;
/// Pause once a round leaves at most this many dirty pages (1 MiB).
pub const SMALL_DIRTY_SET: usize = 256;
/// How long the vCPUs may take to park at the switch-over.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the destination may take to answer the end of the stream.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MigrationReport {
    /// Pre-copy rounds while the guest ran (the first full pass included).
    pub rounds: u32,
    /// Pages sent in each round while the guest ran.
    pub pages_per_round: Vec<u64>,
    /// Pages sent while paused from the guest's last dirty pages (those
    /// whose content changed).
    pub final_pages: u64,
    /// Pages sent while paused because the VMM wrote them (hash changed).
    pub vmm_written_pages: u64,
    /// Bytes written to the stream.
    pub bytes: u64,
    /// The state record's size.
    pub state_bytes: u64,
    /// From the pause until the destination said it runs.
    pub downtime: Duration,
    /// From the connection to the end.
    pub total: Duration,
    /// Where the downtime went: (phase, time), in order: `pause` (vCPUs
    /// parked), `quiesce` (devices drained), `dirty` (the guest's last
    /// pages), `scan` (hashing RAM for the VMM's writes), `state` (read
    /// and sent), `answer` (the destination restored and answered).
    pub phases: Vec<(&'static str, Duration)>,
}

/// A migration request and where its answer goes.
type Job = (MigrationUrl, Box<dyn VmState>, Sender<Result<MigrationReport, MigrationError>>);

/// The migration thread; it ends when every [`Migrator`] is dropped.
pub struct MigratorThread {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// A handle the API uses to start a migration.
#[derive(Clone)]
pub struct Migrator {
    tx: Sender<Job>,
}

/// What the migration thread reads from the VM.
#[derive(Clone)]
pub struct Source {
    /// The VM fd (dirty log).
    pub vm: Arc<VmFd>,
    /// Guest RAM.
    pub ram: GuestRam,
    /// The RAM slots as registered (numbered from 0).
    pub slots: Vec<Slot>,
    /// Pauses and resumes the vCPUs.
    pub control: Arc<VmControl>,
    /// The configuration record's payload (the destination builds the VM
    /// from it).
    pub config: Vec<u8>,
}

impl MigratorThread {
    /// Starts the thread for `src`.
    pub fn start(src: Source) -> std::io::Result<Self> {
        let (tx, rx) = channel::<Job>();
        let thread = std::thread::Builder::new().name("migration".into()).spawn(move || {
            crate::seccomp::install_or_exit(ThreadKind::Migration);
            serve(&src, &rx);
        })?;
        Ok(MigratorThread { tx: Some(tx), thread: Some(thread) })
    }

    /// A handle for requests.
    pub fn handle(&self) -> Option<Migrator> {
        self.tx.clone().map(|tx| Migrator { tx })
    }
}

impl Drop for MigratorThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Migrator {
    /// Migrates the VM to `url`; returns once the destination runs it
    /// (then the caller ends this VM) or the migration failed (then the
    /// VM runs here as before, unless [`MigrationError::SourceStopped`]).
    pub fn migrate(&self, url: MigrationUrl, state: Box<dyn VmState>) -> Result<MigrationReport, MigrationError> {
        let (tx, rx) = channel();
        self.tx.send((url, state, tx)).map_err(|_| MigrationError::Busy("the VM is not running"))?;
        rx.recv().map_err(|_| MigrationError::Busy("the VM ended during the migration"))?
    }
}

fn serve(src: &Source, rx: &Receiver<Job>) {
    while let Ok((url, mut state, answer)) = rx.recv() {
        let r = migrate(src, &url, state.as_mut());
        match &r {
            Ok(rep) => {
                tracing::info!(%url, rounds = rep.rounds, bytes = rep.bytes, downtime_ms = rep.downtime.as_secs_f64() * 1e3, "migrated")
            }
            Err(e) => tracing::warn!(%url, error = %e, "migration failed"),
        }
        let _ = answer.send(r);
    }
}

/// The stream with a byte count.
struct Out {
    w: BufWriter<Connection>,
    bytes: u64,
}

impl Out {
    fn record(&mut self, kind: Kind, parts: &[&[u8]]) -> Result<(), MigrationError> {
        stream::write_record(&mut self.w, kind, parts).map_err(stream::StreamError::Io)?;
        self.bytes += (stream::FRAME_LEN + parts.iter().map(|p| p.len()).sum::<usize>()) as u64;
        Ok(())
    }
}

/// Batches pages into `Pages` / `ZeroPages` records.
struct PageSender<'a> {
    ram: &'a GuestRam,
    hashes: &'a mut PageHashes,
    data: Vec<u8>,
    zeros: Vec<u8>,
    page: Vec<u8>,
    sent: u64,
}

impl<'a> PageSender<'a> {
    fn new(ram: &'a GuestRam, hashes: &'a mut PageHashes) -> Self {
        let data = Vec::with_capacity(PAGES_PER_RECORD * (8 + PAGE_SIZE));
        PageSender { ram, hashes, data, zeros: Vec::new(), page: vec![0; PAGE_SIZE], sent: 0 }
    }

    /// Reads the page at `gpa` and queues it unless its content is what
    /// was last sent (the destination starts zeroed; KVM logs a page
    /// rewritten with the same bytes too). Returns whether it was queued.
    fn page(&mut self, out: &mut Out, gpa: u64) -> Result<bool, MigrationError> {
        self.ram.read(gpa, &mut self.page).map_err(|e| MigrationError::Source(format!("reading guest RAM: {e}")))?;
        let h = page_hash(&self.page);
        if !self.hashes.changed(gpa, h) {
            return Ok(false);
        }
        self.hashes.sent(gpa, h);
        self.sent += 1;
        if h == zero_hash() && self.page.iter().all(|&b| b == 0) {
            self.zeros.extend_from_slice(&gpa.to_le_bytes());
            if self.zeros.len() >= PAGES_PER_RECORD * 64 {
                out.record(Kind::ZeroPages, &[&self.zeros])?;
                self.zeros.clear();
            }
        } else {
            self.data.extend_from_slice(&gpa.to_le_bytes());
            self.data.extend_from_slice(&self.page);
            if self.data.len() >= PAGES_PER_RECORD * (8 + PAGE_SIZE) {
                out.record(Kind::Pages, &[&self.data])?;
                self.data.clear();
            }
        }
        Ok(true)
    }

    fn flush(&mut self, out: &mut Out) -> Result<u64, MigrationError> {
        if !self.data.is_empty() {
            out.record(Kind::Pages, &[&self.data])?;
            self.data.clear();
        }
        if !self.zeros.is_empty() {
            out.record(Kind::ZeroPages, &[&self.zeros])?;
            self.zeros.clear();
        }
        Ok(std::mem::take(&mut self.sent))
    }
}

/// Every page of RAM, in order.
fn all_pages(slots: &[Slot]) -> impl Iterator<Item = u64> + '_ {
    slots.iter().flat_map(|s| (s.start..s.start + s.len).step_by(PAGE_SIZE))
}

/// The pages the dirty log has since the last call, or `None` without a
/// log (it failed now: `logging` goes false, the rounds hash instead).
fn take_dirty(log: &DirtyLog, logging: &mut bool) -> Option<Vec<u64>> {
    if !*logging {
        return None;
    }
    match log.take() {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "the dirty log failed: pre-copy rounds hash all of RAM");
            *logging = false;
            None
        }
    }
}

/// Where the source stands, for undoing a failed migration.
#[derive(Default)]
struct Undo {
    logging: bool,
    paused: bool,
    quiesced: bool,
    locks_released: bool,
}

fn migrate(src: &Source, url: &MigrationUrl, state: &mut dyn VmState) -> Result<MigrationReport, MigrationError> {
    let started = Instant::now();
    let conn = Connection::connect(url).map_err(|source| MigrationError::Connect { url: url.clone(), source })?;
    let log = DirtyLog::new(src.vm.clone(), &src.ram, &src.slots).map_err(MigrationError::Source)?;
    let mut undo = Undo::default();
    run(src, conn, &log, state, &mut undo, started).map_err(|e| roll_back(src, &log, state, &undo, e))
}

/// Undoes what a failed migration did, so the VM runs on here.
fn roll_back(src: &Source, log: &DirtyLog, state: &mut dyn VmState, undo: &Undo, e: MigrationError) -> MigrationError {
    if undo.logging {
        log.stop();
    }
    if undo.locks_released {
        if let Err(lock) = backend::block::lock_handover::take() {
            // The destination may run the VM on these disks: two
            // writers would corrupt them, so this side must not run.
            return MigrationError::SourceStopped(format!("{e}; {lock}"));
        }
    }
    if undo.quiesced {
        state.unquiesce();
    }
    if undo.paused {
        if let Err(c) = src.control.resume() {
            tracing::warn!(error = %c, "cannot resume the VM after a failed migration");
        }
    }
    e
}

/// The pre-copy rounds while the guest runs: round 1 sends every page
/// that holds data (the destination starts zeroed), each further round
/// what the guest dirtied meanwhile, until few pages are left or
/// [`MAX_ROUNDS`]. Returns the guest's last dirty pages (still to send).
fn precopy(
    src: &Source,
    out: &mut Out,
    log: &DirtyLog,
    logging: &mut bool,
    pages: &mut PageSender<'_>,
    rep: &mut MigrationReport,
    started: Instant,
) -> Result<Vec<u64>, MigrationError> {
    for gpa in all_pages(&src.slots) {
        pages.page(out, gpa)?;
    }
    loop {
        let n = pages.flush(out)?;
        rep.rounds += 1;
        rep.pages_per_round.push(n);
        out.record(Kind::Round, &[&rep.rounds.to_le_bytes(), &n.to_le_bytes()])?;
        let last = rep.rounds > MAX_ROUNDS;
        tracing::info!(round = rep.rounds, sent = n, ms = started.elapsed().as_millis() as u64, "pre-copy round");
        match take_dirty(log, logging) {
            Some(d) if d.len() <= SMALL_DIRTY_SET || last => return Ok(d),
            Some(d) => {
                for &gpa in &d {
                    pages.page(out, gpa)?;
                }
            }
            None if (rep.rounds > 1 && n <= SMALL_DIRTY_SET as u64) || last => return Ok(Vec::new()),
            None => {
                for gpa in all_pages(&src.slots) {
                    pages.page(out, gpa)?;
                }
            }
        }
    }
}

fn run(
    src: &Source,
    conn: Connection,
    log: &DirtyLog,
    state: &mut dyn VmState,
    undo: &mut Undo,
    started: Instant,
) -> Result<MigrationReport, MigrationError> {
    let mut out = Out { w: BufWriter::with_capacity(1 << 20, conn), bytes: stream::HEADER_LEN as u64 };
    stream::write_header(&mut out.w).map_err(stream::StreamError::Io)?;
    out.record(Kind::Config, &[&src.config])?;
    let mut rep = MigrationReport::default();
    let mut hashes = PageHashes::zeroed(src.ram.size());
    // Without KVM's log (it cannot be switched on, or a PVH guest's page
    // placement re-registered the slots), every round hashes all of RAM
    // and sends what changed: slower, as correct.
    let mut logging = match log.start() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "no dirty log: pre-copy rounds hash all of RAM");
            false
        }
    };
    undo.logging = logging;
    let mut pages = PageSender::new(&src.ram, &mut hashes);
    let mut dirty = precopy(src, &mut out, log, &mut logging, &mut pages, &mut rep, started)?;
    // Switch-over: nothing may write guest memory from here on.
    let paused_at = Instant::now();
    let mut lap_at = paused_at;
    let mut lap = |rep: &mut MigrationReport, name| {
        let now = Instant::now();
        rep.phases.push((name, now - lap_at));
        lap_at = now;
    };
    // A VM the user paused stays paused if the migration fails.
    let was_paused = src.control.state() == crate::control::RunState::Paused;
    src.control.pause(PAUSE_TIMEOUT).map_err(|e| MigrationError::Source(format!("cannot pause the VM: {e}")))?;
    undo.paused = !was_paused;
    lap(&mut rep, "pause");
    state.quiesce().map_err(MigrationError::Source)?;
    undo.quiesced = true;
    lap(&mut rep, "quiesce");
    // The log's last pages (the scan below catches them too, at the cost
    // of hashing them).
    dirty.extend(take_dirty(log, &mut logging).unwrap_or_default());
    for &gpa in &dirty {
        pages.page(&mut out, gpa)?;
    }
    rep.final_pages = pages.flush(&mut out)?;
    lap(&mut rep, "dirty");
    // The VMM's own writes: every page whose content is not what was sent.
    for gpa in all_pages(&src.slots) {
        pages.page(&mut out, gpa)?;
    }
    rep.vmm_written_pages = pages.flush(&mut out)?;
    lap(&mut rep, "scan");
    let saved = state.save().map_err(MigrationError::Source)?;
    rep.state_bytes = saved.len() as u64;
    // QEMU's order: the images are inactivated before the last state
    // goes, so the destination can activate them when it has it.
    backend::block::lock_handover::release();
    undo.locks_released = true;
    out.record(Kind::State, &[&saved])?;
    out.record(Kind::End, &[])?;
    out.w.flush().map_err(stream::StreamError::Io)?;
    lap(&mut rep, "state");
    let mut conn = out.w.into_inner().map_err(|e| stream::StreamError::Io(e.into_error()))?;
    conn.set_timeouts(Some(ANSWER_TIMEOUT)).map_err(stream::StreamError::Io)?;
    let mut buf = Vec::new();
    match stream::read_record(&mut conn, &mut buf)? {
        Kind::Resumed => {}
        Kind::Failed => return Err(MigrationError::Refused(String::from_utf8_lossy(&buf).into_owned())),
        k => return Err(stream::StreamError::Malformed(format!("a {k:?} record as the destination's answer")).into()),
    }
    rep.bytes = out.bytes;
    lap(&mut rep, "answer");
    rep.downtime = paused_at.elapsed();
    rep.total = started.elapsed();
    Ok(rep)
}

//! SHA-1 of many independent messages at once.
//!
//! [`sha1_many`] hashes a batch of messages (torrent pieces) of any lengths, picking per batch
//! size the fastest way measured (see the README): with AVX-512VL, 8 messages at once, one in each
//! 32-bit lane of the vector registers ("multi-buffer"); with SHA-NI, small batches (and every
//! batch on CPUs without AVX-512VL) 2 or 4 at a time through SHA-NI, their instructions
//! interleaved; with AVX2 but no SHA-NI, 8 lanes of AVX2; single messages, and everything on other
//! CPUs, with the `sha1` crate. [`best_lanes`] tells callers how many messages to batch.
//! [`Sha1Lanes`] does the same for callers that get the messages' bytes a chunk at a time.
//! [`sha1_many_with`] runs one chosen [`Backend`], for tests and measurements.

#[cfg(target_arch = "x86_64")]
#[macro_use]
mod rounds;
mod driver;
#[cfg(target_arch = "x86_64")]
mod x86;

use driver::{Job, digest};

/// A way to compute SHA-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The `sha1` crate, one message at a time (SHA-NI when the CPU has it).
    Sha1Crate,
    /// SHA-NI on 2 messages at once, their instructions interleaved (x86-64 with SHA-NI).
    ShaNi2,
    /// SHA-NI on 4 messages at once, their instructions interleaved (x86-64 with SHA-NI).
    ShaNi4,
    /// 8 messages at once in AVX2 registers (x86-64).
    Avx2x8,
    /// 8 messages at once in 256-bit registers with AVX-512 instructions (x86-64 with AVX2,
    /// AVX-512F and AVX-512VL). The fastest on Zen 4.
    Avx512Vl8,
    /// 16 messages at once in AVX-512 registers (x86-64 with AVX-512F and AVX-512BW).
    Avx512x16,
}

impl Backend {
    /// Every backend, available here or not.
    pub const ALL: [Backend; 6] =
        [Backend::Sha1Crate, Backend::ShaNi2, Backend::ShaNi4, Backend::Avx2x8, Backend::Avx512Vl8, Backend::Avx512x16];

    /// Whether this CPU can run the backend.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        let cpu = x86::cpu();
        match self {
            Backend::Sha1Crate => true,
            #[cfg(target_arch = "x86_64")]
            Backend::ShaNi2 | Backend::ShaNi4 => cpu.sha_ni.is_some(),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2x8 => cpu.avx2.is_some(),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512Vl8 => cpu.avx512vl.is_some(),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512x16 => cpu.avx512.is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// How many messages it hashes at once.
    pub fn lanes(self) -> usize {
        match self {
            Backend::Sha1Crate => 1,
            Backend::ShaNi2 => 2,
            Backend::ShaNi4 => 4,
            Backend::Avx2x8 | Backend::Avx512Vl8 => 8,
            Backend::Avx512x16 => 16,
        }
    }

    /// The backends this CPU can run.
    pub fn available() -> Vec<Backend> {
        Backend::ALL.into_iter().filter(|b| b.is_available()).collect()
    }
}

/// The SHA-1 digest of each of `messages`, in order.
pub fn sha1_many(messages: &[&[u8]]) -> Vec<[u8; 20]> {
    let mut out = vec![[0; 5]; messages.len()];
    plan(messages.len()).run(messages.iter().map(|m| Job::message(m)), &mut out);
    out.into_iter().map(digest).collect()
}

/// How many messages the fastest way on this CPU hashes at once: batches of this many (or a
/// multiple) make the best use of it.
pub fn best_lanes() -> usize {
    plan(usize::MAX).backend.lanes()
}

/// The SHA-1 digest of each of `messages` with `backend` alone: unlike [`sha1_many`], every
/// message goes through the backend's lanes, however few there are.
///
/// # Panics
///
/// If `backend` is not available on this CPU.
pub fn sha1_many_with(backend: Backend, messages: &[&[u8]]) -> Vec<[u8; 20]> {
    let mut out = vec![[0; 5]; messages.len()];
    Plan::only(backend).run(messages.iter().map(|m| Job::message(m)), &mut out);
    out.into_iter().map(digest).collect()
}

/// SHA-1 of several messages whose bytes come a chunk at a time: each [`update`](Self::update)
/// gives the next chunk of every message, and those chunks are hashed together as in
/// [`sha1_many`].
///
/// ```
/// use bitswarm_piecehash::{Sha1Lanes, sha1_many};
///
/// let (a, b) = (vec![1u8; 200], vec![2u8; 300]);
/// let mut lanes = Sha1Lanes::new(2);
/// lanes.update(&[&a[..128], &b[..192]]);
/// lanes.update(&[&[], &b[192..256]]);
/// assert_eq!(lanes.finalize(&[&a[128..], &b[256..]]), sha1_many(&[&a, &b]));
/// ```
#[derive(Clone, Debug)]
pub struct Sha1Lanes {
    plan: Plan,
    states: Vec<[u32; 5]>,
    lens: Vec<u64>,
}

impl Sha1Lanes {
    /// For `messages` messages, with the backend [`sha1_many`] would choose for as many.
    pub fn new(messages: usize) -> Self {
        Sha1Lanes::with_plan(plan(messages), messages)
    }

    /// For `messages` messages, with `backend` alone (as [`sha1_many_with`]).
    ///
    /// # Panics
    ///
    /// If `backend` is not available on this CPU.
    pub fn with_backend(backend: Backend, messages: usize) -> Self {
        Sha1Lanes::with_plan(Plan::only(backend), messages)
    }

    fn with_plan(plan: Plan, messages: usize) -> Self {
        Sha1Lanes { plan, states: vec![driver::H0; messages], lens: vec![0; messages] }
    }

    /// How many messages.
    pub fn messages(&self) -> usize {
        self.states.len()
    }

    /// Adds `chunks[i]` to message `i`. Chunks may differ in length, and be empty.
    ///
    /// # Panics
    ///
    /// If there are not as many chunks as messages, or a chunk's length is not a multiple of 64
    /// (only the last chunk, given to [`finalize`](Self::finalize), may end mid-block).
    pub fn update(&mut self, chunks: &[&[u8]]) {
        assert_eq!(chunks.len(), self.messages(), "one chunk per message");
        assert!(chunks.iter().all(|c| c.len().is_multiple_of(64)), "chunks must be whole 64-byte blocks");
        let mut out = vec![[0; 5]; chunks.len()];
        self.plan.run(chunks.iter().zip(&self.states).map(|(c, &s)| Job::blocks(s, c)), &mut out);
        self.states = out;
        for (len, c) in self.lens.iter_mut().zip(chunks) {
            *len += c.len() as u64;
        }
    }

    /// Adds `last[i]`, of any length, to message `i` and returns the digests.
    ///
    /// # Panics
    ///
    /// If there are not as many chunks as messages.
    pub fn finalize(self, last: &[&[u8]]) -> Vec<[u8; 20]> {
        assert_eq!(last.len(), self.messages(), "one chunk per message");
        let mut out = vec![[0; 5]; last.len()];
        let jobs = last.iter().zip(self.states.iter().zip(&self.lens)).map(|(c, (&s, &len))| Job::resume(s, c, len));
        self.plan.run(jobs, &mut out);
        out.into_iter().map(digest).collect()
    }
}

/// How to run a batch: which backend, and below how many jobs still running it stops and hands
/// them to the plan for that many (because its lanes would be mostly idle).
#[derive(Clone, Copy, Debug)]
struct Plan {
    backend: Backend,
    /// Only the x86-64 kernels have lanes to drain.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    drain_below: usize,
}

impl Plan {
    /// `backend` for every message.
    fn only(backend: Backend) -> Plan {
        assert!(backend.is_available(), "{backend:?} is not available on this CPU");
        Plan { backend, drain_below: 0 }
    }

    fn run<'a>(self, jobs: impl IntoIterator<Item = Job<'a>>, out: &mut [[u32; 5]]) {
        #[cfg(target_arch = "x86_64")]
        let cpu = x86::cpu();
        #[cfg(target_arch = "x86_64")]
        let drain_below = self.drain_below;
        let left = match self.backend {
            Backend::Sha1Crate => {
                for (o, job) in out.iter_mut().zip(jobs) {
                    *o = job.finish_scalar();
                }
                Vec::new()
            }
            #[cfg(target_arch = "x86_64")]
            Backend::ShaNi2 => {
                let k = cpu.sha_ni.expect("SHA-NI available");
                driver::run_lanes::<2>(jobs, out, drain_below, |s, b| k.compress(s, b))
            }
            #[cfg(target_arch = "x86_64")]
            Backend::ShaNi4 => {
                let k = cpu.sha_ni.expect("SHA-NI available");
                driver::run_lanes::<4>(jobs, out, drain_below, |s, b| k.compress(s, b))
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2x8 => {
                let k = cpu.avx2.expect("AVX2 available");
                driver::run_lanes::<8>(jobs, out, drain_below, |s, b| k.compress(s, b))
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512Vl8 => {
                let k = cpu.avx512vl.expect("AVX-512VL available");
                driver::run_lanes::<8>(jobs, out, drain_below, |s, b| k.compress(s, b))
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512x16 => {
                let k = cpu.avx512.expect("AVX-512 available");
                driver::run_lanes::<16>(jobs, out, drain_below, |s, b| k.compress(s, b))
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86-64 only"),
        };
        if !left.is_empty() {
            self.finish(left, out);
        }
    }

    /// Finishes the jobs this plan left, fewer than `drain_below`, with the plan for as many,
    /// which has fewer lanes: this recursion ends.
    fn finish(self, left: Vec<(usize, Job)>, out: &mut [[u32; 5]]) {
        let next = plan(left.len());
        debug_assert!(next.backend.lanes() < self.backend.lanes());
        let mut states = vec![[0; 5]; left.len()];
        next.run(left.iter().map(|&(_, job)| job).collect::<Vec<_>>(), &mut states);
        for ((i, _), state) in left.into_iter().zip(states) {
            out[i] = state;
        }
    }
}

/// The plan for a batch of `count` messages, from the measurements in the README: on Zen 4 one
/// core hashes, with every lane busy, 6.35 GB/s with `Avx512Vl8`, 5.9 with `Avx512x16`, 4.6 with
/// `ShaNi4`, 4.1 with `Avx2x8`, 3.2 with `ShaNi2` and 1.93 with the `sha1` crate (SHA-NI). A
/// kernel with `k` of its `L` lanes busy does `k/L` of that. So: from 5 messages the 8-lane
/// kernel; 3 or 4 in `ShaNi4`, 2 in `ShaNi2`, 1 in the `sha1` crate, which is also how each
/// kernel's last messages are finished. AVX2 never beats 4-way SHA-NI here; it is used only
/// on CPUs without SHA-NI, from 2 messages (an estimate, not measured: the `sha1` crate's portable
/// code is slower than two lanes of AVX2 on any CPU we know of).
fn plan(count: usize) -> Plan {
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = x86::cpu();
        let plan = |backend, drain_below| Plan { backend, drain_below };
        if cpu.sha_ni.is_some() {
            return match count {
                5.. if cpu.avx512vl.is_some() => plan(Backend::Avx512Vl8, 5),
                3.. => plan(Backend::ShaNi4, 3),
                2 => plan(Backend::ShaNi2, 2),
                _ => plan(Backend::Sha1Crate, 0),
            };
        }
        if count >= 2 {
            if cpu.avx512vl.is_some() {
                return plan(Backend::Avx512Vl8, 2);
            }
            if cpu.avx2.is_some() {
                return plan(Backend::Avx2x8, 2);
            }
        }
    }
    let _ = count;
    Plan { backend: Backend::Sha1Crate, drain_below: 0 }
}

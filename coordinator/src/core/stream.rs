//! Streams of generated tokens, from the workers to the jobs' followers: pure state (the
//! node holds the reply handles, typed `W` here), so its rules are tested without a
//! network. One replica leads each job's stream, the first whose chunk arrives: honest
//! replicas produce the same tokens, so one is enough to show, and which one is fixed so
//! a follower never sees two workers' words mixed. What settles is still the verified
//! output; a stream that differs from it is the lead's signed lie.

use std::collections::BTreeMap;

use olc_protocol::{ContentId, Follow, TokenChunk};

/// How long a follow is held without news before it is answered with nothing new (well
/// inside the request timeout of the follower's transport).
pub const HOLD_MS: u64 = 10_000;

/// At most this many followers wait on one job; more are answered at once.
pub const MAX_WAITERS_PER_JOB: usize = 64;

/// One job's stream.
#[derive(Debug)]
struct Feed {
    /// The assignment whose chunks are shown.
    lead: ContentId,
    tokens: Vec<u32>,
    /// Each chunk's text, in order: a follow's `from` counts these.
    texts: Vec<String>,
    /// Tokens streamed up to the end of each chunk.
    token_ends: Vec<usize>,
}

/// A held follow.
#[derive(Debug)]
pub struct Waiter<W> {
    pub follow: Follow,
    pub since_ms: u64,
    pub reply: W,
}

/// Why a chunk was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkRefusal {
    #[error("another replica leads this job's stream")]
    NotLead,
    #[error("chunk out of order: expected offset {expected}, got {got}")]
    OutOfOrder { expected: u32, got: u32 },
}

/// What a follow gets: chunks from `from` on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slice {
    /// The chunks the follower has after this (its next `from`).
    pub next: u32,
    pub tokens: Vec<u32>,
    pub text: String,
}

/// Every job's stream and the follows held on it, plus each job's revision: bumped by the
/// node whenever the job changes, so a follow with an older `seen` is answered.
#[derive(Debug)]
pub struct Streams<W> {
    feeds: BTreeMap<ContentId, Feed>,
    revisions: BTreeMap<ContentId, u64>,
    waiting: BTreeMap<ContentId, Vec<Waiter<W>>>,
}

impl<W> Default for Streams<W> {
    fn default() -> Self {
        Self {
            feeds: BTreeMap::new(),
            revisions: BTreeMap::new(),
            waiting: BTreeMap::new(),
        }
    }
}

impl Feed {
    fn new(lead: ContentId) -> Self {
        Self {
            lead,
            tokens: Vec::new(),
            texts: Vec::new(),
            token_ends: Vec::new(),
        }
    }
}

impl<W> Streams<W> {
    /// Adds a chunk (already checked to be signed by the assignment's worker).
    pub fn push(&mut self, chunk: TokenChunk) -> Result<(), ChunkRefusal> {
        let feed = self
            .feeds
            .entry(chunk.job_id)
            .or_insert_with(|| Feed::new(chunk.assignment));
        if feed.lead != chunk.assignment {
            return Err(ChunkRefusal::NotLead);
        }
        let expected = u32::try_from(feed.tokens.len()).unwrap_or(u32::MAX);
        if chunk.offset != expected {
            return Err(ChunkRefusal::OutOfOrder {
                expected,
                got: chunk.offset,
            });
        }
        feed.tokens.extend_from_slice(&chunk.tokens);
        feed.texts.push(chunk.text);
        feed.token_ends.push(feed.tokens.len());
        self.bump(chunk.job_id);
        Ok(())
    }

    /// Tokens streamed so far for a job: what a cancel keeps.
    pub fn streamed(&self, job: &ContentId) -> u32 {
        self.feeds
            .get(job)
            .map_or(0, |f| u32::try_from(f.tokens.len()).unwrap_or(u32::MAX))
    }

    /// The job changed: a follower that saw an older revision has news. Only jobs that
    /// someone follows (or streams) keep a revision.
    pub fn bump(&mut self, job: ContentId) {
        if let Some(r) = self.revisions.get_mut(&job) {
            *r += 1;
        } else if self.feeds.contains_key(&job) {
            self.revisions.insert(job, 1);
        }
    }

    /// The job's revision for a follower to quote back, starting it at 1 (0 is "seen
    /// nothing yet", always news): from now on the job's changes bump it.
    pub fn revision(&mut self, job: &ContentId) -> u64 {
        *self.revisions.entry(*job).or_insert(1)
    }

    /// The revision without starting one: for a job that has ended, whose changes are over
    /// (nothing would ever forget a revision started for it).
    pub fn last_revision(&self, job: &ContentId) -> u64 {
        self.revisions.get(job).copied().unwrap_or(1)
    }

    /// The chunks a follower lacks.
    pub fn slice(&self, job: &ContentId, from: u32) -> Slice {
        let Some(feed) = self.feeds.get(job) else {
            return Slice {
                next: from,
                ..Slice::default()
            };
        };
        let from_chunk = (from as usize).min(feed.texts.len());
        let skip = from_chunk
            .checked_sub(1)
            .and_then(|i| feed.token_ends.get(i))
            .copied()
            .unwrap_or(0);
        Slice {
            next: u32::try_from(feed.texts.len()).unwrap_or(u32::MAX),
            tokens: feed.tokens.get(skip..).unwrap_or_default().to_vec(),
            text: feed.texts[from_chunk..].concat(),
        }
    }

    /// Whether a follow has news to be told now.
    pub fn has_news(&self, follow: &Follow) -> bool {
        let chunks = self.feeds.get(&follow.job_id).map_or(0, |f| f.texts.len());
        let revision = self.revisions.get(&follow.job_id).copied().unwrap_or(1);
        follow.seen == 0 || chunks > follow.from as usize || revision > follow.seen
    }

    /// Holds a follow; gives it back if it has news or the job has too many waiting.
    pub fn hold(&mut self, waiter: Waiter<W>) -> Option<Waiter<W>> {
        let job = waiter.follow.job_id;
        if self.has_news(&waiter.follow) {
            return Some(waiter);
        }
        let queue = self.waiting.entry(job).or_default();
        if queue.len() >= MAX_WAITERS_PER_JOB {
            return Some(waiter);
        }
        queue.push(waiter);
        None
    }

    /// The follows to answer now: those with news, and those held for [`HOLD_MS`].
    pub fn due(&mut self, now_ms: u64) -> Vec<Waiter<W>> {
        let mut due = Vec::new();
        let jobs: Vec<ContentId> = self.waiting.keys().copied().collect();
        for job in jobs {
            let Some(queue) = self.waiting.remove(&job) else {
                continue;
            };
            let (ready, held): (Vec<_>, Vec<_>) = queue.into_iter().partition(|w| {
                self.has_news(&w.follow) || now_ms.saturating_sub(w.since_ms) >= HOLD_MS
            });
            due.extend(ready);
            if !held.is_empty() {
                self.waiting.insert(job, held);
            }
        }
        due
    }

    /// The follows held for one job (answered, with the job over, before it is forgotten).
    pub fn take_waiting(&mut self, job: &ContentId) -> Vec<Waiter<W>> {
        self.waiting.remove(job).unwrap_or_default()
    }

    /// Forgets a job that has ended and whose followers were answered: its output is in
    /// the job view from now on.
    pub fn forget(&mut self, job: &ContentId) {
        self.feeds.remove(job);
        self.revisions.remove(job);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(n: u8) -> ContentId {
        ContentId::of(&[n])
    }

    fn chunk(assignment: u8, offset: u32, tokens: &[u32], text: &str) -> TokenChunk {
        TokenChunk {
            job_id: id(0),
            assignment: id(assignment),
            offset,
            tokens: tokens.to_vec(),
            text: text.into(),
        }
    }

    fn follow(from: u32, seen: u64) -> Follow {
        Follow {
            job_id: id(0),
            from,
            seen,
            cancel_if_gone: None,
        }
    }

    #[test]
    fn the_first_replica_to_stream_leads_and_chunks_come_in_order() {
        let mut s = Streams::<()>::default();
        s.push(chunk(1, 0, &[5, 6], "ab")).unwrap();
        assert_eq!(s.push(chunk(2, 0, &[5], "a")), Err(ChunkRefusal::NotLead));
        assert_eq!(
            s.push(chunk(1, 5, &[7], "c")),
            Err(ChunkRefusal::OutOfOrder {
                expected: 2,
                got: 5
            })
        );
        s.push(chunk(1, 2, &[7], "c")).unwrap();
        s.push(chunk(1, 3, &[], "!")).unwrap();
        assert_eq!(s.streamed(&id(0)), 3);
        let all = s.slice(&id(0), 0);
        assert_eq!(
            (all.next, all.tokens, all.text),
            (3, vec![5, 6, 7], "abc!".to_string())
        );
        let rest = s.slice(&id(0), 1);
        assert_eq!(
            (rest.next, rest.tokens, rest.text),
            (3, vec![7], "c!".to_string())
        );
        let none = s.slice(&id(0), 3);
        assert_eq!(
            (none.next, none.tokens, none.text),
            (3, vec![], String::new())
        );
    }

    #[test]
    fn a_follow_is_held_until_a_chunk_or_a_change_or_its_time_is_up() {
        let mut s = Streams::<u32>::default();
        let first = s.hold(Waiter {
            follow: follow(0, 0),
            since_ms: 0,
            reply: 1,
        });
        assert!(
            first.is_some(),
            "a follower that has seen nothing is answered at once"
        );
        let seen = s.revision(&id(0));
        assert!(
            s.hold(Waiter {
                follow: follow(0, seen),
                since_ms: 0,
                reply: 2
            })
            .is_none()
        );
        assert!(s.due(1).is_empty(), "nothing new: still held");
        s.push(chunk(1, 0, &[5], "a")).unwrap();
        let due = s.due(2);
        assert_eq!(due.iter().map(|w| w.reply).collect::<Vec<_>>(), vec![2]);

        let seen = s.revision(&id(0));
        assert!(
            s.hold(Waiter {
                follow: follow(1, seen),
                since_ms: 10,
                reply: 3
            })
            .is_none()
        );
        s.bump(id(0));
        assert_eq!(s.due(11).len(), 1, "a change of the job is news");

        let seen = s.revision(&id(0));
        assert!(
            s.hold(Waiter {
                follow: follow(1, seen),
                since_ms: 10,
                reply: 4
            })
            .is_none()
        );
        assert!(s.due(10 + HOLD_MS - 1).is_empty());
        assert_eq!(
            s.due(10 + HOLD_MS).len(),
            1,
            "answered before the transport gives up"
        );
    }

    #[test]
    fn a_job_holds_a_bounded_number_of_followers() {
        let mut s = Streams::<usize>::default();
        let seen = s.revision(&id(0));
        for i in 0..MAX_WAITERS_PER_JOB {
            assert!(
                s.hold(Waiter {
                    follow: follow(0, seen),
                    since_ms: 0,
                    reply: i
                })
                .is_none()
            );
        }
        let extra = s.hold(Waiter {
            follow: follow(0, seen),
            since_ms: 0,
            reply: 99,
        });
        assert_eq!(extra.map(|w| w.reply), Some(99));
        assert_eq!(s.take_waiting(&id(0)).len(), MAX_WAITERS_PER_JOB);
    }
}
